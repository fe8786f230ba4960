"""`python -m legion.cli` is `legionctl`."""

from legion.cli.main import main

main()
