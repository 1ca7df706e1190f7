"""`python -m ops` = `hybrid-router`."""

from ops.cli import main

main()
