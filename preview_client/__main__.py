"""`python -m preview_client ...`: the `preview` command."""

from preview_client.cli import main

raise SystemExit(main())
