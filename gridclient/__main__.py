"""`python -m gridclient ...`: the command line."""

from gridclient.cli import main

raise SystemExit(main())
