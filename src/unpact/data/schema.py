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

from ..errors import UnpactError, closest
from ..io import read_jsonl, write_jsonl

REQUIRED = ("id", "question", "answer")
OPTIONAL_TEXT = ("paraphrased_question", "entity", "attribute")
# An item is one question and a short answer; a field this long is a pasted document or a broken export,
# and would otherwise surface much later as a model stalling on one enormous sequence.
MAX_FIELD_CHARS = 1_000_000


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
            typo = closest(key, [k for k in row if k not in REQUIRED])
            hint = f" (found {typo!r}: rename it to '{key}')" if typo else ""
            raise UnpactError(f"{where}: missing field '{key}'{hint}; every item needs {', '.join(REQUIRED)}")
        _check_text(row[key], where, key)
    for key in ("split", *OPTIONAL_TEXT):
        if row.get(key) is not None:
            _check_text(row[key], where, key, empty_ok=True)
    perturbed = row.get("perturbed_answers") or []
    if not isinstance(perturbed, list):
        raise UnpactError(f"{where}: field 'perturbed_answers' must be a list of strings, got "
                          f"{type(perturbed).__name__}; write [\"wrong answer\", ...]")
    for i, p in enumerate(perturbed):
        _check_text(p, where, f"perturbed_answers[{i}]")
    return Item(
        id=row["id"],
        question=row["question"],
        answer=row["answer"],
        split=row.get("split") or "",
        paraphrased_question=row.get("paraphrased_question") or None,
        perturbed_answers=tuple(perturbed),
        entity=row.get("entity"),
        attribute=row.get("attribute"),
    )


def _check_text(value, where: str, key: str, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise UnpactError(f"{where}: field '{key}' must be a string, got {type(value).__name__} {value!r:.40}; "
                          "write it as a JSON string")
    if not empty_ok and not value.strip():
        raise UnpactError(f"{where}: field '{key}' is empty; give a non-empty {key} or drop the item")
    if len(value) > MAX_FIELD_CHARS:
        raise UnpactError(f"{where}: field '{key}' is {len(value):,} characters, over the {MAX_FIELD_CHARS:,} an "
                          "item may hold; shorten it or drop the item")


def load_items(path: str | Path) -> list[Item]:
    """Load and validate a JSON Lines item file. Errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise UnpactError(f"{path}: data file not found; check the path (items are JSON Lines, one object a line)")
    try:
        rows = read_jsonl(path)
    except UnicodeDecodeError:
        raise UnpactError(f"{path}: not UTF-8 text; re-encode the file as UTF-8") from None
    except ValueError as e:
        raise UnpactError(f"{e}; fix that line (one JSON object per line)") from None
    return items_from_rows(rows, path)


def items_from_rows(rows: list[dict], path: str | Path) -> list[Item]:
    """Validate the rows of the item file ``path`` (read by the caller, as JSON Lines or a JSON list)."""
    items, seen = [], set()
    for n, row in enumerate(rows, 1):
        item = item_from_dict(row, f"{path}:{n}")
        if item.id in seen:
            raise UnpactError(f"{path}:{n}: duplicate id {item.id!r}; ids must be unique")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise UnpactError(f"{path}: no items; the file is empty, add one JSON object per line")
    return items


def save_items(path: str | Path, items: list[Item]) -> None:
    write_jsonl(path, (it.to_dict() for it in items))
