"""`python -m greenq` is the `greenq` command."""

from .cli import main

main()
