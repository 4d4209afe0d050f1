"""`python -m tests.busy_worker`: a long-running worker whose renders first hold the CPU for
BUSY_SECONDS in pure Python (the GIL changes hands only at the interpreter's switch interval),
then plan the job as a dry run. Stops on SIGTERM. (Kept apart from the test modules: importing
tests.conftest would point REDIS_URL away.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def main() -> None:
    from shared import wiring
    from shared.render import render_preview
    from shared.worker import Worker

    def busy_render(request: Any, workdir: Path, settings: Any, progress: Any) -> Any:
        end = time.monotonic() + float(os.environ["BUSY_SECONDS"])
        while time.monotonic() < end:
            sum(i * i for i in range(20_000))
        return render_preview(request, workdir, settings, progress)

    services = wiring.services()
    worker = Worker(services.settings, services.queue, services.store, render=busy_render)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run_forever()


if __name__ == "__main__":
    main()
