"""`python -m router` = `hybrid-router`."""

from router.cli import main

main()
