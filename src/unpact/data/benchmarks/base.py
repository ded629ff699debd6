"""What every benchmark adapter shares: the `Benchmark` it returns, reading published files, and the
checks its result must pass.

Published benchmarks mix file conventions under one suffix (TOFU's ``.json`` files are JSON Lines,
MUSE's are JSON lists, a ``datasets`` export writes JSON Lines), so `read_records` sniffs rather than
trusting the name. Every row becomes an `Item` through `item_from_dict`, so a published file is
validated exactly like unpact's own JSON Lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UnpactError
from ...io import json_problem, read_jsonl
from .. import SPLITS
from ..schema import Item, item_from_dict

# (hub config, hub split) -> path of that split's file in the published folder layout, or None to skip it
HubLayout = Callable[[str, str], str | None]


@dataclass
class Benchmark:
    """A benchmark mapped onto unpact's items. ``splits`` always has forget, retain and utility; the
    adapters say when utility is empty by design (MUSE measures utility on retain)."""

    name: str
    splits: dict[str, list[Item]]
    icl: list[Item] = field(default_factory=list)
    verbmem: list[tuple[str, str]] = field(default_factory=list)
    raw: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""


def read_records(path: Path) -> list:
    """The rows of a JSON list or JSON Lines file; errors name the file (and line) and the fix."""
    if not path.is_file():
        raise UnpactError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark would hide a leading "["
    except UnicodeDecodeError:
        raise UnpactError(f"{path}: not UTF-8 text; re-encode the file as UTF-8") from None
    if not text.lstrip().startswith("["):
        try:
            return read_jsonl(path)
        except ValueError as e:
            raise UnpactError(f"{e}; fix that line (one JSON object per line, or one JSON list)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UnpactError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix the file") from None
    except (ValueError, RecursionError) as e:
        raise UnpactError(f"{path}: invalid JSON ({json_problem(e)}); fix the file") from None


def to_item(row, where: str, split: str, id: str | None = None, fields: dict[str, str] | None = None) -> Item:
    """One published row as an Item. ``fields`` maps published names to schema names and drops the
    rest (TOFU's ``paraphrased_answer`` must not turn into a question paraphrase); ``id`` replaces any
    id in the row so that ids stay unique across the files of one benchmark."""
    if not isinstance(row, dict):
        raise UnpactError(f"{where}: expected a JSON object with question and answer, got {type(row).__name__}")
    d = dict(row) if fields is None else {fields[k]: v for k, v in row.items() if k in fields}
    if id is not None:
        d["id"] = id
    d["split"] = split
    return item_from_dict(d, where)


def load_rows(path: Path, split: str, prefix: str, fields: dict[str, str]) -> list[Item]:
    """A whole published QA file; ids are ``<prefix>-<row number>`` so they point back at the file."""
    rows = read_records(path)
    if not rows:
        raise UnpactError(f"{path}: no items; the file is empty")
    return [to_item(row, f"{path}:{n}", split, f"{prefix}-{n:04d}", fields) for n, row in enumerate(rows, 1)]


def require(path: Path, what: str, found: Iterable[str]) -> Path:
    """``path`` if it is a file; otherwise an error that lists what the folder does hold, since the
    usual cause is a different config or file name than the one asked for."""
    if not path.is_file():
        found = sorted(found)
        raise UnpactError(f"{path}: {what} not found; the folder has: {', '.join(found) or 'nothing'}")
    return path


def read_texts(folder: Path) -> dict[str, list[str]]:
    """Raw corpora (MUSE ``raw/``, WMDP corpora) by file stem: a ``.txt`` file is one text (MUSE ships
    whole books that way); a JSON file is a list of strings or of ``{"text": ...}`` rows (hub exports)."""
    texts: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.suffix == ".txt":
            try:
                texts[path.stem] = [path.read_text(encoding="utf-8-sig")]
            except UnicodeDecodeError as e:
                raise UnpactError(f"{path}: not UTF-8 text (byte {e.start}); re-encode the file as UTF-8") from None
        elif path.suffix in (".json", ".jsonl"):
            rows = [r.get("text") if isinstance(r, dict) else r for r in read_records(path)]
            for n, text in enumerate(rows, 1):
                if not isinstance(text, str):
                    raise UnpactError(f"{path}:{n}: expected a string or an object with a 'text' string")
            texts[path.stem] = rows
    return texts


def check(bench: Benchmark) -> Benchmark:
    """Ids unique across the whole benchmark (the study keys results by id) and every item in the split
    it names; a clash usually means one file or config was given for two roles."""
    seen: dict[str, str] = {}
    for name, items in [*bench.splits.items(), ("icl", bench.icl)]:
        for it in items:
            if it.split != name:
                raise UnpactError(f"{bench.source}: item {it.id!r} says split {it.split!r} but sits in '{name}'")
            if it.id in seen:
                raise UnpactError(f"{bench.source}: duplicate id {it.id!r} in {seen[it.id]} and {name}; "
                                  "give each file or config one role only")
            seen[it.id] = name
    missing = [s for s in SPLITS if s not in bench.splits]
    if missing:
        raise UnpactError(f"{bench.source}: benchmark has no {', '.join(missing)} split")
    return bench


def fetch_hub(repo_id: str, layout: HubLayout) -> Path:
    """A hub dataset written once into the published folder layout under ``$UNPACT_CACHE/hub``, so the
    hub only fills a folder and loading never has a second code path; later runs work offline."""
    dest = Path(os.environ.get("UNPACT_CACHE") or Path.home() / ".cache" / "unpact") / "hub" / repo_id.replace("/", "__")
    if (dest / ".complete").is_file():
        return dest
    failure = UnpactError(f"{repo_id}: not found locally and cannot download (offline or `datasets` not installed); "
                          "download the files into a folder in the published layout and pass its path")
    try:
        import datasets
    except ImportError:
        raise failure from None
    try:
        for config in datasets.get_dataset_config_names(repo_id):
            for split in datasets.get_dataset_split_names(repo_id, config):
                if rel := layout(config, split):
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    datasets.load_dataset(repo_id, config, split=split).to_json(dest / rel)
    except Exception as e:  # offline, unknown repo, gated repo: all mean "get the files yourself"
        raise failure from e
    (dest / ".complete").touch()
    return dest
