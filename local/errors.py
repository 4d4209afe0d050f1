"""The one error type that stops the emulator before it serves."""

from __future__ import annotations


class StartupError(Exception):
    """Reported as one line on stderr; the command exits with status 2."""

    exit_code = 2
