"""MUSE (muse-bench/MUSE-News, MUSE-Books): a folder with one subfolder per hub config, one JSON list
per split: ``knowmem/{forget_qa,retain_qa,forget_qa_icl,retain_qa_icl}.json`` (``{"question",
"answer"}``), ``verbmem/forget.json`` (``{"prompt", "gt"}``) and ``raw/{forget,retain1,retain2,
holdout}.json`` or ``.txt`` (texts).

MUSE scores utility as knowledge memorisation on the retain set, so utility is empty here and retain
is knowmem retain_qa (``retain2_qa`` in the pre-release layout). The ``*_icl`` splits are the few-shot
demonstrations MUSE prepends to every knowmem question; they are no split of their own.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UnpactError
from .base import Benchmark, load_rows, read_records, read_texts, require

FIELDS = {"question": "question", "answer": "answer"}
CONFIGS = ("knowmem", "verbmem", "raw")


def hub_layout(config: str, split: str) -> str | None:
    return f"{config}/{split}.json" if config in CONFIGS else None


def load_muse(path: Path) -> Benchmark:
    """forget = knowmem forget_qa, retain = knowmem retain_qa, utility = empty; icl = both ``*_icl``
    files where present, verbmem = verbmem/forget (prompt, gt) pairs, raw = the raw/ texts."""
    knowmem = path / "knowmem"
    found = [p.name for p in knowmem.glob("*")] if knowmem.is_dir() else []
    forget = require(knowmem / "forget_qa.json", "MUSE forget set (knowmem forget_qa)", found)
    retain = next((knowmem / f for f in ("retain_qa.json", "retain2_qa.json") if (knowmem / f).is_file()),
                  knowmem / "retain_qa.json")
    require(retain, "MUSE retain set (knowmem retain_qa, or the older retain2_qa)", found)
    splits = {"forget": load_rows(forget, "forget", "muse-forget_qa", FIELDS),
              "retain": load_rows(retain, "retain", f"muse-{retain.stem}", FIELDS),
              "utility": []}
    icl = [it for name in ("forget_qa_icl", "retain_qa_icl") if (knowmem / f"{name}.json").is_file()
           for it in load_rows(knowmem / f"{name}.json", "icl", f"muse-{name}", FIELDS)]
    verbmem_file = path / "verbmem" / "forget.json"
    verbmem = _verbmem(verbmem_file) if verbmem_file.is_file() else []
    return Benchmark("muse", splits, icl=icl, verbmem=verbmem, raw=read_texts(path / "raw"))


def _verbmem(path: Path) -> list[tuple[str, str]]:
    """MUSE's verbatim-memorisation pairs: the model is prompted with ``prompt`` and its continuation
    is compared with ``gt``."""
    pairs = []
    for n, row in enumerate(read_records(path), 1):
        prompt, gt = (row.get("prompt"), row.get("gt")) if isinstance(row, dict) else (None, None)
        if not (isinstance(prompt, str) and isinstance(gt, str) and prompt.strip() and gt.strip()):
            raise UnpactError(f"{path}:{n}: expected an object with non-empty 'prompt' and 'gt' strings")
        pairs.append((prompt, gt))
    return pairs
