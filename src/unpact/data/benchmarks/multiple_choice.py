"""MMLU and WMDP: four-choice questions, as items whose question lists the lettered choices
("A. …\\nB. …") and whose answer is the letter, so that the attribution target is the one short
answer the model emits; the three wrong letters are the perturbed answers.

Layouts read: the original MMLU release (hendrycks/test): ``dev/``, ``val/``, ``test/`` folders of
``<subject>_<split>.csv`` without a header, columns question, A, B, C, D, answer letter; and the hub
form (``cais/mmlu``, ``cais/wmdp``) exported as JSON or JSON Lines, ``<split>/<config>.json`` with rows
``{"question", "choices": [4], "answer": 0..3, "subject"?}``. A WMDP folder may also hold its config
files (``wmdp-bio.json``, ...) directly; they count as the test split.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ...errors import UnpactError
from ..schema import Item, item_from_dict
from .base import Benchmark, fetch_hub, read_records, read_texts

LETTERS = ("A", "B", "C", "D")
SPLIT_DIRS = {"dev": "dev", "val": "val", "validation": "val", "test": "test"}
Pools = dict[str, dict[str, list[Item]]]  # split -> subject -> items
Spec = str | list[str]  # a split name, a test subject, or a list of them
Row = tuple[str, object, list, int, str | None]  # where, question, choices, answer index, subject


def hub_layout(config: str, split: str) -> str | None:
    return None if config == "all" or split == "auxiliary_train" else f"{split}/{config}.json"


def load_mmlu(path: Path, *, forget: Spec = "test", retain: Spec = "dev", utility: Spec = "test") -> Benchmark:
    """Each option is a split name (all its items), a subject (its test items) or a list of those,
    taken in the order forget, retain, utility, each skipping what an earlier one took. So by default
    forget = all of test, retain = dev and utility = what test has left: empty, unless ``forget``
    names only some subjects (e.g. forget=["abstract_algebra"] leaves the other subjects as utility)."""
    splits = _select(read_pools(path, "mmlu"), {"forget": forget, "retain": retain, "utility": utility}, path)
    return Benchmark("mmlu", splits)


def load_wmdp(path: Path, *, forget: Spec = "test", mmlu: str | Path | None = None, retain: Spec | None = None,
              utility: Spec | None = None) -> Benchmark:
    """forget = the WMDP questions (cais/wmdp configs wmdp-bio/chem/cyber; a subset via ``forget`` as
    for MMLU). WMDP has no retain or utility questions of its own; its authors measure utility with
    MMLU, so retain (default dev) and utility (default test) come from the MMLU folder ``mmlu`` and are
    empty without it (``mmlu`` may be a hub id, ``hf://cais/mmlu``). raw = the ``corpora/`` texts (cais/wmdp-corpora) when present."""
    splits = _select(read_pools(path, "wmdp"), {"forget": forget}, path)
    if mmlu is not None:
        # WMDP's utility set lives in another hub dataset (cais/mmlu), fetched into a folder as the benchmark is
        mmlu = fetch_hub(str(mmlu).removeprefix("hf://"), hub_layout) if str(mmlu).startswith("hf://") else Path(mmlu)
        splits |= _select(read_pools(mmlu, "mmlu"), {"retain": "dev" if retain is None else retain,
                                                        "utility": "test" if utility is None else utility}, mmlu)
    elif retain is not None or utility is not None:
        raise UnpactError(f"{path}: options retain/utility select MMLU items; pass mmlu=<MMLU folder> too")
    else:
        splits |= {"retain": [], "utility": []}
    return Benchmark("wmdp", splits, raw=read_texts(path / "corpora"))


def read_pools(path: Path, prefix: str) -> Pools:
    """All items of a folder by split and subject; ids ``<prefix>-<split>-<subject>-<row>`` stay the
    same whichever options later sort them into forget, retain or utility."""
    dirs = {SPLIT_DIRS[d.name]: d for d in sorted(path.glob("*")) if d.is_dir() and d.name in SPLIT_DIRS}
    readers = {".csv": _csv_rows, ".json": _hub_rows, ".jsonl": _hub_rows}
    pools: Pools = {}
    for split, folder in (dirs or {"test": path}).items():
        for file in sorted(f for f in folder.glob("*") if f.suffix in readers):
            name = file.stem.removesuffix(f"_{split}")
            n = 0
            for n, (where, question, choices, answer, subject) in enumerate(readers[file.suffix](file), 1):
                item = _item(where, question, choices, answer, subject or name, f"{prefix}-{split}-{name}-{n:04d}")
                pools.setdefault(split, {}).setdefault(item.entity, []).append(item)
            if n == 0:  # else its split silently vanishes and the error blames the options instead
                raise UnpactError(f"{file}: no questions; the file is empty, fill it or remove it")
    if not pools:
        raise UnpactError(f"{path}: no multiple-choice files; expected dev/, val/ or test/ holding "
                          "<subject>_<split>.csv (MMLU) or <config>.json in the hub form")
    return pools


def _select(pools: Pools, specs: dict[str, Spec], path: Path) -> dict[str, list[Item]]:
    taken: set[str] = set()
    splits: dict[str, list[Item]] = {}
    for split, spec in specs.items():
        splits[split] = []
        for name in [spec] if isinstance(spec, str) else list(spec or []):
            if name in pools:
                groups = list(pools[name].values())
            elif name in pools.get("test", {}):
                groups = [pools["test"][name]]
            else:
                raise UnpactError(f"{path}: option {split}={name!r} is neither a split ({', '.join(pools)}) "
                                  f"nor a test subject ({', '.join(sorted(pools.get('test', {})))})")
            for it in (it for group in groups for it in group if it.id not in taken):
                taken.add(it.id)
                splits[split].append(replace(it, split=split))
    if "forget" in specs and not splits["forget"]:
        raise UnpactError(f"{path}: option forget={specs['forget']!r} selects no items")
    return splits


def _item(where: str, question, choices: list, answer: int, subject: str, id: str) -> Item:
    if not isinstance(question, str) or not question.strip():
        raise UnpactError(f"{where}: 'question' must be a non-empty string; fill it in or drop the row")
    text = "\n".join([question.rstrip(), *(f"{letter}. {c}" for letter, c in zip(LETTERS, choices, strict=True))])
    wrong = [letter for letter in LETTERS if letter != LETTERS[answer]]
    return item_from_dict({"id": id, "question": text, "answer": LETTERS[answer], "perturbed_answers": wrong,
                           "entity": subject}, where)


def _csv_rows(path: Path) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # Excel writes a byte-order mark
        reader, line = csv.reader(f), 1
        try:
            for row in reader:
                where, line = f"{path}:{line}", reader.line_num + 1  # a quoted field may span lines
                if len(row) != 6:
                    raise UnpactError(f"{where}: expected 6 columns (question, A, B, C, D, answer letter), "
                                      f"got {len(row)}")
                if row[5].strip() not in LETTERS:
                    raise UnpactError(f"{where}: answer letter {row[5]!r} is not one of A, B, C, D")
                yield where, row[0], row[1:5], LETTERS.index(row[5].strip()), None
        except (csv.Error, UnicodeDecodeError) as e:
            raise UnpactError(f"{path}:{line}: unreadable CSV ({e}); save it as UTF-8 CSV") from None


def _hub_rows(path: Path) -> Iterator[Row]:
    for n, row in enumerate(read_records(path), 1):
        where = f"{path}:{n}"
        row = row if isinstance(row, dict) else {}
        choices, answer = row.get("choices"), row.get("answer")
        if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
            raise UnpactError(f"{where}: 'choices' must be a list of 4 strings")
        answer = LETTERS.index(answer) if answer in LETTERS else answer
        if type(answer) is not int or not 0 <= answer <= 3:
            raise UnpactError(f"{where}: 'answer' must be 0..3 (or a letter A-D), got {answer!r}")
        yield where, row.get("question"), choices, answer, row.get("subject")
