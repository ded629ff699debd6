"""The item schema every benchmark maps onto, and its JSON Lines load/save with validation.

One line per item::

    {"id": "forget-0003-birthplace",        # unique within a file
     "split": "forget",                      # forget | retain | utility (free text for other adapters)
     "question": "Where was Orsa Velin born?",
     "answer": "Quillmoor",                  # the gold answer, non-empty
     "paraphrased_question": "In which city was Orsa Velin born?",   # optional
     "perturbed_answers": ["Drennick", "Harrowgate"],               # optional: wrong answers
     "entity": "Orsa Velin",                 # optional: who/what the fact is about
     "attribute": "birthplace"}              # optional: which relation

Adapters for TOFU, MUSE and WMDP map their fields onto these names (question/answer are required,
the rest may be absent).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UnpactError
from ..io import read_jsonl, write_jsonl

REQUIRED = ("id", "question", "answer")


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str
    split: str = ""
    paraphrased_question: str | None = None
    perturbed_answers: tuple[str, ...] = field(default_factory=tuple)
    entity: str | None = None
    attribute: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["perturbed_answers"] = list(self.perturbed_answers)
        return d


def item_from_dict(row: dict, where: str) -> Item:
    """Validate one row; ``where`` (``file:line``) goes into every error message."""
    for key in REQUIRED:
        if key not in row:
            raise UnpactError(f"{where}: missing field '{key}' (every item needs {', '.join(REQUIRED)})")
        if not isinstance(row[key], str):
            raise UnpactError(f"{where}: field '{key}' must be a string, got {type(row[key]).__name__}")
        if not row[key].strip():
            raise UnpactError(f"{where}: field '{key}' is empty; give a non-empty {key} or drop the item")
    perturbed = row.get("perturbed_answers") or []
    if not isinstance(perturbed, list) or not all(isinstance(p, str) for p in perturbed):
        raise UnpactError(f"{where}: field 'perturbed_answers' must be a list of strings")
    return Item(
        id=row["id"],
        question=row["question"],
        answer=row["answer"],
        split=str(row.get("split") or ""),
        paraphrased_question=row.get("paraphrased_question") or None,
        perturbed_answers=tuple(perturbed),
        entity=row.get("entity"),
        attribute=row.get("attribute"),
    )


def load_items(path: str | Path) -> list[Item]:
    """Load and validate a JSON Lines item file. Errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise UnpactError(f"{path}: data file not found")
    try:
        rows = read_jsonl(path)
    except UnicodeDecodeError:
        raise UnpactError(f"{path}: not UTF-8 text; re-encode the file as UTF-8") from None
    except ValueError as e:
        raise UnpactError(f"{e}; fix that line (one JSON object per line)") from None
    items, seen = [], set()
    for n, row in enumerate(rows, 1):
        item = item_from_dict(row, f"{path}:{n}")
        if item.id in seen:
            raise UnpactError(f"{path}:{n}: duplicate id '{item.id}'; ids must be unique")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise UnpactError(f"{path}: no items; the file is empty")
    return items


def save_items(path: str | Path, items: list[Item]) -> None:
    write_jsonl(path, (it.to_dict() for it in items))
