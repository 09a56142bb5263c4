"""`python -m trainer COMMAND` from a checkout: the `melanoma` command, whose trainer commands live in
`melanoma.trainer` (installed with the project)."""

from melanoma.cli import main

main()
