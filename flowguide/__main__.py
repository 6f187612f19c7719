"""``python -m flowguide``: the command line."""

from flowguide.apps.cli import main

raise SystemExit(main())
