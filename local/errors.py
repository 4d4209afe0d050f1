"""The errors that stop the emulator before it serves."""

from __future__ import annotations


class StartupError(Exception):
    """Reported as one line on stderr; the command exits with status 2."""

    exit_code = 2


class TemplateError(StartupError):
    """template.yaml cannot be read, or the emulator cannot run what it declares."""
