"""`python -m router` = `hybrid-router` (the command lives in `ops.cli`; `serve` runs `router.serve`)."""

from ops.cli import main

main()
