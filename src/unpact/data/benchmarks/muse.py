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
from ..schema import Item
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
            has = ", ".join(row) if isinstance(row, dict) else type(row).__name__
            raise UnpactError(f"{path}:{n}: expected an object with non-empty 'prompt' and 'gt' strings "
                              f"(this row has: {has or 'nothing'}); fix or drop the row")
        pairs.append((prompt, gt))
    return pairs


def knowmem_shots(icl: list[Item], split: str) -> list[Item]:
    """MUSE's demonstrations for ``split``'s questions: ``forget_qa_icl`` before forget questions,
    ``retain_qa_icl`` before retain ones; all ICL examples where the split's own file is absent."""
    own = [it for it in icl if it.id.startswith(f"muse-{split}_qa_icl-")]
    return own or list(icl)


def knowmem_prompt(shots: list[Item], question: str) -> str:
    """MUSE's KnowMem prompt: each demonstration as ``Question: …\\nAnswer: …`` followed by a blank line,
    then the question and ``Answer: `` for the model to continue (plain text, no chat template)."""
    demos = "".join(f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in shots)
    return f"{demos}Question: {question}\nAnswer: "


def knowmem_answer(generation: str) -> str:
    """The answer in a KnowMem continuation: up to the first blank line or the next ``Question:``,
    where a model that goes on writes the next demonstration."""
    return generation.split("\n\n", 1)[0].split("Question:", 1)[0].strip()
