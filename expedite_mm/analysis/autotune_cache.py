"""The autotuner's measurement cache (``tools/analysis/autotune.py``, docs/autotune.md,
``cache.sqlite``): the keys (:func:`digest` of the config, checkpoint, image and setting;
:func:`file_digest`, :func:`checkpoint_digest`) and the :class:`Cache` itself, in memory
until a run may write, then one committed SQLite row per measurement, so that an
interrupted run is resumed without measuring anything again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import os.path as osp
import sqlite3
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


# --------------------------------------------------------------------------- hashing
def digest(*parts: Any) -> str:
    """A short hash of JSON-able parts (a cache key).

    Args:
        parts: the values hashed, in order.
    """
    sha = hashlib.sha256()
    for part in parts:
        sha.update(json.dumps(part, sort_keys=True, default=str).encode())
        sha.update(b"\0")
    return sha.hexdigest()[:24]


def file_digest(path: str) -> str:
    """A short hash of a file's bytes.

    Args:
        path: the file.
    """
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:24]


def checkpoint_digest(checkpoint: str) -> str:
    """The identity of a checkpoint: its absolute path, size and modification time (a
    URL: the URL).

    Args:
        checkpoint: a path or URL.
    """
    if osp.exists(checkpoint):
        info = os.stat(checkpoint)
        return digest(osp.abspath(checkpoint), info.st_size, info.st_mtime_ns)
    return digest(checkpoint)


# --------------------------------------------------------------------------- cache
class Cache:
    """Every measurement, keyed by a hash: in memory until :meth:`open` names the file
    (so that a run stopped by bad input writes nothing), then also in SQLite, one
    committed row per measurement (an interrupted run loses nothing it finished)."""

    def __init__(self) -> None:
        self._memory: Dict[str, Any] = {}
        self._db: Optional[sqlite3.Connection] = None
        self._writable = False
        self._pending: List[str] = []
        self.hits = 0
        self.stored = 0

    def read(self, path: str) -> None:
        """Read (only) an existing cache file: what an earlier run measured.

        Args:
            path: the SQLite file; nothing happens if it does not exist.
        """
        if osp.isfile(path):
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self._writable = False

    def open(self, path: str) -> None:
        """Keep every measurement (those so far, and from now on) in ``path``.

        Args:
            path: the SQLite file (created with its folder).
        """
        self.close()
        os.makedirs(osp.dirname(path), exist_ok=True)
        self._db = sqlite3.connect(path)
        self._writable = True
        self._db.execute("CREATE TABLE IF NOT EXISTS measurements "
                         "(key TEXT PRIMARY KEY, kind TEXT, value BLOB)")
        for key in self._pending:
            self._write(key, self._memory[key])
        self._pending.clear()
        self._db.commit()

    def close(self) -> None:
        """Close the file (what is in memory stays)."""
        if self._db is not None:
            self._db.close()
            self._db = None
            self._writable = False

    @staticmethod
    def _encode(value: Any) -> Tuple[str, bytes]:
        if isinstance(value, dict) and value and all(
                type(v).__module__ == "numpy" for v in value.values()):
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **value)
            return "arrays", buffer.getvalue()
        return "json", json.dumps(value).encode()

    def _write(self, key: str, value: Any) -> None:
        kind, blob = self._encode(value)
        self._db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?)",
                         (key, kind, blob))

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or None.

        Args:
            key: the hash.
        """
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if self._db is None:
            return None
        row = self._db.execute("SELECT kind, value FROM measurements WHERE key = ?",
                               (key,)).fetchone()
        if row is None:
            return None
        kind, blob = row
        if kind == "arrays":
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                value = {name: data[name] for name in data.files}
        else:
            value = json.loads(blob)
        self._memory[key] = value
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        """Store a measurement (committed at once once the file is open).

        Args:
            key: the hash.
            value: JSON-able, or a dict of numpy arrays.
        """
        self._memory[key] = value
        self.stored += 1
        if self._writable:
            self._write(key, value)
            self._db.commit()
        else:
            self._pending.append(key)
