"""`python -m worker COMMAND` from a checkout: the `melanoma` command, whose worker commands live in
`melanoma.worker` (installed with the project)."""

from melanoma.cli import main

main()
