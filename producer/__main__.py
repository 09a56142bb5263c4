"""`python -m producer COMMAND` from a checkout: the `melanoma` command, whose producer commands live in
`melanoma.producer` (installed with the project)."""

from melanoma.cli import main

main()
