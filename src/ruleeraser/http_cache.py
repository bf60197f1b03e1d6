"""The answers of a model behind a URL, kept on disk so that no row is paid for twice.

One SQLite file, ``http-cache.sqlite3`` in the cache directory, maps a key (a hash of the URL,
the request format and the row's content) to the model's answer for that row, as JSON. A file
that is not such a cache is never deleted nor rewritten: :class:`CacheFileError` names it and
says how to go on.

Example
-------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     cache = AnswerCache(Path(folder))
...     cache.put([("key-1", "[0.9,0.1]")])
...     found = cache.get(["key-1", "key-2"])
...     cache.close()
>>> found
{'key-1': '[0.9,0.1]'}
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CACHE_FILE = "http-cache.sqlite3"


class CacheFileError(ValueError):
    """The cache file cannot be used (damaged, not a cache, locked); ``path`` is the file."""

    def __init__(self, path: Path, problem: sqlite3.Error) -> None:
        if "locked" in str(problem):
            advice = "another process holds it; wait for it, or use another --cache-dir"
        else:
            advice = (
                f"it is damaged or not an answer cache; move it aside (mv {path} {path}.bad) "
                "and rerun: the rows it held will be sent to the model again"
            )
        super().__init__(f"cache file {path}: {problem} ({advice})")
        self.path, self.problem = path, problem

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by its arguments (Ray, Dask workers)
        return type(self), (self.path, self.problem)


class AnswerCache:
    """Answers by key in ``directory/http-cache.sqlite3`` (created when missing).

    Parameters
    ----------
    directory: where the file lives; created with its parents if missing.

    Callers serialise access (one thread at a time); every SQLite error becomes a
    :class:`CacheFileError` naming the file.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / CACHE_FILE
        try:
            self.db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            with self.db:
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS answers "
                    "(key TEXT PRIMARY KEY, answer TEXT NOT NULL)"
                )
            self.db.execute("SELECT key, answer FROM answers LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise CacheFileError(self.path, exc) from None

    def get(self, keys: Sequence[str]) -> dict[str, str]:
        """The answers held for ``keys`` (those not held are left out)."""
        found: dict[str, str] = {}
        try:
            for s in range(0, len(keys), 500):
                chunk = list(keys[s : s + 500])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, answer FROM answers WHERE key IN ({marks})"
                found.update(self.db.execute(query, chunk).fetchall())
        except sqlite3.Error as exc:
            raise CacheFileError(self.path, exc) from None
        return found

    def put(self, items: list[tuple[str, str]]) -> None:
        """Keep ``(key, answer)`` pairs, in one transaction."""
        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", items)
        except sqlite3.Error as exc:
            raise CacheFileError(self.path, exc) from None

    def close(self) -> None:
        self.db.close()
