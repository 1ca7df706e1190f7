"""``python -m specialists.training`` entry point."""

from specialists.training.cli import main

raise SystemExit(main())
