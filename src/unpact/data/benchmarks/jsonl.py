"""unpact's own layout: ``forget.jsonl``, ``retain.jsonl`` and optionally ``utility.jsonl`` in the item
schema (`unpact.data.schema`), or plain ``{"question", "answer"}`` JSON Lines as other tools write
them. Only here may ``id`` be absent: it becomes ``<split>-<line>``, which is unique across the files
because it names the split. The file decides an item's split, whatever its ``split`` field says.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..schema import Item, items_from_rows
from .base import Benchmark, read_records, require, to_item


def load_jsonl(path: Path) -> Benchmark:
    """forget = forget.jsonl, retain = retain.jsonl, utility = utility.jsonl (empty when absent)."""
    found = [p.name for p in path.glob("*.jsonl")]
    splits = {split: split_file(require(path / f"{split}.jsonl", f"{split} file", found), split)
              for split in ("forget", "retain")}
    utility = path / "utility.jsonl"
    splits["utility"] = split_file(utility, "utility") if utility.is_file() else []
    return Benchmark("jsonl", splits)


def split_file(path: Path, split: str) -> list[Item]:
    """One split's items from an item file or plain {"question", "answer"} JSON Lines (ids made up if absent)."""
    rows = read_records(path)
    if all(isinstance(row, dict) and "id" in row for row in rows):
        # the schema's own checks and messages, on the rows already read: read_records also takes a JSON list
        return [replace(it, split=split) for it in items_from_rows(rows, path)]
    return [to_item({"id": f"{split}-{n:04d}", **row} if isinstance(row, dict) else row, f"{path}:{n}", split)
            for n, row in enumerate(rows, 1)]
