"""EventBridge schedule expressions (`rate(...)`, 6-field AWS `cron(...)`) and the thread that
fires them. Times are UTC, as in EventBridge."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

log = logging.getLogger("local.schedules")


class ScheduleError(ValueError):
    """A schedule expression EventBridge would refuse, or one the emulator cannot evaluate."""


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400}


@dataclass(frozen=True)
class Rate:
    seconds: int

    def next_after(self, previous: float, scale: float = 1.0) -> float:
        """Next fire time on the monotonic clock; `scale` > 1 makes a demo or test go faster."""
        return previous + self.seconds / scale


_MONTHS = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)}
# name, lowest, highest, names
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, {}),
)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int] | None  # None: '?', the day is chosen by day-of-week
    months: frozenset[int]
    weekdays: frozenset[int] | None  # AWS numbering: 1 = Sunday ... 7 = Saturday
    years: frozenset[int]

    def next_after(self, moment: datetime) -> datetime | None:
        """The first matching minute strictly after `moment` (UTC), None if there is none."""
        t = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        last_year = max(self.years)
        while t.year <= last_year:
            if t.year not in self.years:
                t = datetime(t.year + 1, 1, 1, tzinfo=UTC)
            elif t.month not in self.months:
                t = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)
            elif not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t
        return None

    def _day_matches(self, t: datetime) -> bool:
        if self.days is not None:
            return t.day in self.days
        assert self.weekdays is not None
        return (t.weekday() + 1) % 7 + 1 in self.weekdays


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int] | None:
    if text == "?":
        if name not in ("day-of-month", "day-of-week"):
            raise ScheduleError(f"'?' is only allowed in day-of-month or day-of-week, not in {name}")
        return None
    for refused in ("L", "W", "#"):
        if refused in text.upper().replace("JUL", "").replace("WED", ""):
            raise ScheduleError(f"{name} {text!r}: '{refused}' is valid in EventBridge but not supported by the "
                                "emulator; use explicit days")

    def number(token: str) -> int:
        value = names.get(token.upper()) if names else None
        if value is None:
            if not token.isdigit():
                raise ScheduleError(f"{name}: {token!r} is not a number{' or name' if names else ''}")
            value = int(token)
        if not low <= value <= high:
            raise ScheduleError(f"{name}: {value} is outside {low}-{high}")
        return value

    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, second = base.partition("-")
            start, end = number(first), number(second)
            if end < start:
                raise ScheduleError(f"{name}: range {base!r} runs backwards")
        else:
            start = number(base)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(body: str) -> Cron:
    fields = body.split()
    if len(fields) != 6:
        raise ScheduleError("cron needs 6 fields: minutes hours day-of-month month day-of-week year")
    parsed = [_parse_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    minutes, hours, days, months, weekdays, years = parsed
    if (days is None) == (weekdays is None):
        raise ScheduleError("cron: exactly one of day-of-month and day-of-week must be '?'")
    assert minutes is not None and hours is not None and months is not None and years is not None
    return Cron(minutes, hours, days, months, weekdays, years)


def parse_expression(expression: str) -> Rate | Cron:
    text = expression.strip()
    match = _RATE.match(text)
    if match:
        value, unit = int(match[1]), match[2]
        if value == 0:
            raise ScheduleError(f"{expression}: the rate must be positive")
        # EventBridge insists on the singular for 1 and the plural otherwise.
        if (value == 1) != (not unit.endswith("s")):
            raise ScheduleError(f"{expression}: use '{value} {unit.rstrip('s') + ('' if value == 1 else 's')}'")
        return Rate(value * _UNIT_SECONDS[unit.rstrip("s")])
    if text.startswith("cron(") and text.endswith(")"):
        try:
            return parse_cron(text[5:-1])
        except ScheduleError as exc:
            raise ScheduleError(f"{expression}: {exc}") from None
    raise ScheduleError(f"{expression!r} is neither rate(N unit) nor cron(6 fields)")


# --------------------------------------------------------------------------- the firing thread


@dataclass
class _Entry:
    key: str
    timer: Rate | Cron
    due_monotonic: float


class Scheduler:
    """Fires each enabled schedule at its times by calling `fire(key)` (which must not block:
    the emulator hands the invocation to its async pool). Rates count from start-up, like a
    rule created at that moment; `scale` speeds rates up, cron keeps wall-clock time."""

    def __init__(self, schedules: dict[str, str], fire: Callable[[str], None], scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self._fire = fire
        self._scale = scale
        self._stop = threading.Event()
        now = time.monotonic()
        self._entries = [_Entry(key, timer, self._next(timer, now)) for key, timer in
                         ((k, parse_expression(v)) for k, v in schedules.items())]
        self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)

    def _next(self, timer: Rate | Cron, after_monotonic: float) -> float:
        if isinstance(timer, Rate):
            return timer.next_after(after_monotonic, self._scale)
        wall = datetime.now(UTC) + timedelta(seconds=after_monotonic - time.monotonic())
        upcoming = timer.next_after(wall)
        if upcoming is None:
            return float("inf")
        return time.monotonic() + (upcoming - datetime.now(UTC)).total_seconds()

    def next_fire(self) -> dict[str, float]:
        """Seconds until each schedule fires next."""
        now = time.monotonic()
        return {e.key: max(0.0, e.due_monotonic - now) for e in self._entries}

    def start(self) -> None:
        if self._entries:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for entry in self._entries:
                if entry.due_monotonic <= now:
                    try:
                        self._fire(entry.key)
                    except Exception:
                        log.exception("schedule %s could not fire", entry.key)
                    # From the due time, not from now: a slow fire does not drift the rate.
                    entry.due_monotonic = self._next(entry.timer, max(entry.due_monotonic, now - 1.0))
            wait = min((e.due_monotonic for e in self._entries), default=now + 60) - time.monotonic()
            self._stop.wait(min(max(wait, 0.0), 60.0))
