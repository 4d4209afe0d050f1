"""Write shared/payload_check.py, the payload schema compiled ahead by fastjsonschema (which
the enqueue function would otherwise generate and compile at its cold start).

    python -m deploy.payload_check [--check]

--check: exit 1 when the file is not what the schema gives (tests/test_payload_check.py fails
the same way).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "shared" / "payload_check.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.payload_check", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args(argv)
    from shared.contract import fast_validator_source

    source = fast_validator_source()
    current = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if current != source:
            print(f"{TARGET.name} is out of date: run python -m deploy.payload_check", file=sys.stderr)
            return 1
        return 0
    if current != source:
        TARGET.write_text(source)
        print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
