"""`python -m functions.render_worker`: the long-running worker process."""

from shared.worker import main

raise SystemExit(main())
