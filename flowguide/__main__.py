"""``python -m flowguide``: the command line."""

from flowguide.cli import main

raise SystemExit(main())
