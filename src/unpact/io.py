"""Atomic file writes and JSON Lines I/O: a file is either complete or absent, never half-written.

Under several processes (`unpact.distributed`) every process runs the same code and would write the
same file at once; the writes here happen on the main process only, and every process continues when
the file is in place (so all of them can read it back), with the main process's error, if any, raised
on all of them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import distributed


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename
    (under several processes: by the main process, the others waiting for it)."""
    if distributed.world() > 1:
        distributed.main_only(lambda: _write_atomic(path, data))
        return
    _write_atomic(path, data)


def _write_atomic(path: str | Path, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        # a failed write(2) names no file; the CLI's message must say which one (disk full, permissions)
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the temporary files `write_atomic` leaves when a process is killed mid-write (they are
    never read: every reader opens the final name). Returns what was removed.

    Under several processes only the main process looks (another one could otherwise delete the
    temporary file of a write the main process is in the middle of), the others waiting for it."""
    if distributed.world() > 1:
        return distributed.main_only(lambda: remove_partial_writes(folder))
    removed = []
    for tmp in Path(folder).rglob(".*.tmp") if Path(folder).is_dir() else ():
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def json_problem(e: ValueError | RecursionError) -> str:
    """What is wrong with a JSON text that ``json.loads`` refused, in a few words. Besides syntax
    errors it raises ValueError for an integer of over 4300 digits and RecursionError for nesting
    deeper than the interpreter's stack; both would otherwise escape without naming the file."""
    if isinstance(e, json.JSONDecodeError):
        return e.msg
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return "a number too long to read"


def read_jsonl(path: str | Path) -> list[dict]:
    """Read JSON Lines; a malformed line raises ValueError naming the file and line number."""
    rows = []
    # utf-8-sig: editors on Windows start files with a byte-order mark, which json.loads refuses
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise ValueError(f"{path}:{n}: invalid JSON ({json_problem(e)})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows
