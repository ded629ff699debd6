"""Stage results cached in the run directory: computed once, reused while their inputs are the same."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ..io import read_json, write_json

# Bumped whenever a stage's stored result gains or changes fields, so older cached stages are recomputed.
RESULT_SCHEMA = 9


def digest(obj) -> str:
    """A short hash of everything a stage's result depends on (settings, items, model files)."""
    return hashlib.sha256(json.dumps([RESULT_SCHEMA, obj], sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(path: Path, key: str) -> dict | None:
    """The result stored at ``path`` if it was computed for ``key``, else None."""
    if path.is_file() and (stored := read_json(path)).get("key") == key:
        return stored
    return None


def cached_stage(path: Path, key: str, compute: Callable[[], dict]) -> dict:
    """The result stored at ``path`` for ``key``, or ``compute()``'s, stored there (atomically, with
    ``key``) before it is returned, so an interrupted run resumes after its last finished stage."""
    stored = cached(path, key)
    if stored is not None:
        return stored
    result = {"key": key, **compute()}
    write_json(path, result)
    return result
