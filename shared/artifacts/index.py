"""The local store's index: each published preview's disk usage and publish time, a running
total, and a tombstone for each preview pruned to keep the store within its budget.

One SQLite file beside the previews (`previews/.index.sqlite3`), shared by every process that
publishes into the same DATA_DIR (the emulator's worker, `python -m functions.render_worker`),
so a publish costs an upsert, a read of the total and, past the budget, one indexed look-up of
the oldest previews: never a walk of the folders. The folders stay the truth: an index that is
missing is rebuilt from them once, and the hourly age pruning reconciles the two.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

FILENAME = ".index.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS previews (
    project TEXT NOT NULL, job TEXT NOT NULL, bytes INTEGER NOT NULL, published REAL NOT NULL,
    PRIMARY KEY (project, job)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS previews_by_age ON previews (published);
CREATE TABLE IF NOT EXISTS pruned (
    project TEXT NOT NULL, job TEXT NOT NULL, pruned REAL NOT NULL, budget_mb REAL NOT NULL,
    PRIMARY KEY (project, job)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pruned_by_age ON pruned (pruned);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL,
                                   count INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS previews_added AFTER INSERT ON previews BEGIN
    UPDATE totals SET bytes = bytes + NEW.bytes, count = count + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS previews_removed AFTER DELETE ON previews BEGIN
    UPDATE totals SET bytes = bytes - OLD.bytes, count = count - 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS previews_replaced AFTER UPDATE OF bytes ON previews BEGIN
    UPDATE totals SET bytes = bytes - OLD.bytes + NEW.bytes WHERE id = 0; END;
"""


@dataclass(frozen=True)
class Entry:
    project: str
    job: str
    bytes: int
    published: float


@dataclass(frozen=True)
class Tombstone:
    pruned: float
    budget_mb: float


class StoreIndex:
    """Thread-safe (a connection per thread); processes take turns through SQLite's locks."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FILENAME
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()
        self._pid = os.getpid()

    def _connection(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # a forked child: the parent's connections are not its own
            self._local, self._pid = threading.local(), os.getpid()
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE below.
            # check_same_thread=False: the last reference to a connection may go in another
            # thread (close() drops every thread's, each closing once its thread lets go of it).
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            # WAL: readers do not wait for a publisher; NORMAL: a crash may lose the last
            # commits, never corrupt the file, and the next reconciliation restores them.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def open(self, scan: Iterable[Entry] | None = None) -> bool:
        """Create the tables; a new index is filled from `scan` (the store's folders), once,
        whichever process gets there first. True when this call filled it."""
        if self._ready:
            return False
        with self._ready_lock:
            if self._ready:
                return False
            connection = self._connection()
            connection.executescript(_SCHEMA)
            filled = False
            with self._write() as db:
                built = db.execute("PRAGMA user_version").fetchone()[0]
                if not built:
                    if scan is not None:
                        db.executemany("INSERT OR REPLACE INTO previews VALUES (?, ?, ?, ?)",
                                       ((e.project, e.job, e.bytes, e.published) for e in scan))
                        filled = True
                    db.execute("PRAGMA user_version = 1")
            self._ready = True
            return filled

    def close(self) -> None:
        """Close this thread's connection and let go of every other thread's: each closes when
        its thread is done with it. Closing another thread's connection while that thread runs
        a statement on it crashes the interpreter (seen: a worker publishing as the emulator
        reset its services)."""
        with self._ready_lock:
            own: sqlite3.Connection | None = getattr(self._local, "connection", None)
            self._local = threading.local()
            self._ready = False
        if own is not None:
            own.close()

    # -- reads

    def total(self) -> tuple[int, int]:
        """Bytes and number of the previews indexed."""
        row = self._connection().execute("SELECT bytes, count FROM totals WHERE id = 0").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def oldest(self, limit: int) -> list[Entry]:
        rows = self._connection().execute(
            "SELECT project, job, bytes, published FROM previews ORDER BY published LIMIT ?", (limit,))
        return [Entry(*row) for row in rows]

    def newest(self) -> Entry | None:
        row = self._connection().execute(
            "SELECT project, job, bytes, published FROM previews ORDER BY published DESC LIMIT 1").fetchone()
        return Entry(*row) if row else None

    def get(self, project: str, job: str) -> Entry | None:
        row = self._connection().execute(
            "SELECT project, job, bytes, published FROM previews WHERE project = ? AND job = ?",
            (project, job)).fetchone()
        return Entry(*row) if row else None

    def all(self) -> list[Entry]:
        return [Entry(*row) for row in self._connection().execute(
            "SELECT project, job, bytes, published FROM previews")]

    def tombstone(self, project: str, job: str) -> Tombstone | None:
        row = self._connection().execute(
            "SELECT pruned, budget_mb FROM pruned WHERE project = ? AND job = ?", (project, job)).fetchone()
        return Tombstone(*row) if row else None

    # -- writes

    def record(self, entry: Entry) -> int:
        """A preview published (or published again): its row, no tombstone. The new total."""
        with self._write() as db:
            db.execute("INSERT INTO previews VALUES (?, ?, ?, ?) ON CONFLICT (project, job) DO UPDATE "
                       "SET bytes = excluded.bytes, published = excluded.published",
                       (entry.project, entry.job, entry.bytes, entry.published))
            db.execute("DELETE FROM pruned WHERE project = ? AND job = ?", (entry.project, entry.job))
            return int(db.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0])

    def forget(self, project: str, job: str, published: float | None = None,
               tombstone: Tombstone | None = None) -> None:
        """Drop a preview's row (only if it still has `published`, when given: a re-render that
        landed meanwhile keeps its own), leaving `tombstone` in its place when given."""
        with self._write() as db:
            if published is None:
                db.execute("DELETE FROM previews WHERE project = ? AND job = ?", (project, job))
            else:
                db.execute("DELETE FROM previews WHERE project = ? AND job = ? AND published = ?",
                           (project, job, published))
            if tombstone is not None:
                db.execute("INSERT OR REPLACE INTO pruned VALUES (?, ?, ?, ?)",
                           (project, job, tombstone.pruned, tombstone.budget_mb))

    def add_missing(self, entries: Iterable[Entry]) -> int:
        """Rows for folders the index did not know (a publisher killed between its rename and its
        row); existing rows are kept. How many were added."""
        count = "SELECT count FROM totals WHERE id = 0"
        with self._write() as db:
            before = int(db.execute(count).fetchone()[0])
            db.executemany("INSERT OR IGNORE INTO previews VALUES (?, ?, ?, ?)",
                           ((e.project, e.job, e.bytes, e.published) for e in entries))
            return int(db.execute(count).fetchone()[0]) - before

    def drop_tombstones(self, before: float, keep: int) -> None:
        """Tombstones older than `before`, and all but the newest `keep`."""
        with self._write() as db:
            db.execute("DELETE FROM pruned WHERE pruned < ?", (before,))
            db.execute("DELETE FROM pruned WHERE pruned < "
                       "(SELECT pruned FROM pruned ORDER BY pruned DESC LIMIT 1 OFFSET ?)", (keep,))
