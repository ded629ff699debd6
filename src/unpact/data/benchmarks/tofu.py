"""TOFU (locuslab/TOFU): a folder of ``<config>.json`` files named like the hub configs, each JSON
Lines ``{"question", "answer", "perturbed_answer": [..], "paraphrased_answer"?}``.

TOFU's forget sets come with a matching retain set that leaves out exactly the forgotten authors
(forget01 ↔ retain99, forget05 ↔ retain95, forget10 ↔ retain90), so retain is derived from forget.
``paraphrased_answer`` paraphrases the answer, not the question, and is dropped: filling
``paraphrased_question`` with it would make the paraphrase attack ask the answer back.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

from ...errors import UnpactError
from .base import Benchmark, load_rows, require

FIELDS = {"question": "question", "answer": "answer", "perturbed_answer": "perturbed_answers"}
UTILITY = ("real_authors_perturbed", "world_facts_perturbed")


def hub_layout(config: str, split: str) -> str:
    return f"{config}.json"  # every TOFU config has the one split "train"


def load_tofu(path: Path, *, forget: str | None = None, retain: str | None = None,
              utility: list[str] | None = None, forget_from: str | None = None,
              n_forget: int | None = None, seed: int = 0) -> Benchmark:
    """forget = config ``forget`` (default forget10), retain = config ``retain`` (derived from forget),
    utility = configs ``utility`` (default real_authors_perturbed and world_facts_perturbed where
    present). With ``forget_from``, forget is a ``seed``-ed random subset of ``n_forget`` rows of that
    one config and retain the rest of it, in file order: a study built from world facts alone."""
    configs = sorted(p.stem for p in path.glob("*.json"))

    def rows(config: str, split: str):
        file = require(path / f"{config}.json", f"TOFU config '{config}'", configs)
        return load_rows(file, split, f"tofu-{config}", FIELDS)

    if forget_from is None:
        if n_forget is not None:
            raise UnpactError(f"{path}: option n_forget={n_forget} needs forget_from=<config> to draw from")
        forget = forget or "forget10"
        retain = retain or _retain_for(path, forget)
        splits = {"forget": rows(forget, "forget"), "retain": rows(retain, "retain")}
        used = {forget, retain}
    else:
        if forget or retain:
            raise UnpactError(f"{path}: options forget/retain and forget_from exclude each other; pass one")
        pool = rows(forget_from, "forget")
        if isinstance(n_forget, bool) or not isinstance(n_forget, int) or not 0 < n_forget < len(pool):
            raise UnpactError(f"{path}: option n_forget={n_forget!r} must be an integer from 1 to "
                              f"{len(pool) - 1} ({forget_from} has {len(pool)} items)")
        chosen = set(random.Random(seed).sample(range(len(pool)), n_forget))
        splits = {"forget": [it for i, it in enumerate(pool) if i in chosen],
                  "retain": [replace(it, split="retain") for i, it in enumerate(pool) if i not in chosen]}
        used = {forget_from}
    if utility is None:
        utility = [c for c in UTILITY if c in configs and c not in used]
    splits["utility"] = [it for config in utility for it in rows(config, "utility")]
    return Benchmark("tofu", splits)


def _retain_for(path: Path, forget: str) -> str:
    m = re.fullmatch(r"forget(\d\d)(_perturbed)?", forget)
    if not m:
        raise UnpactError(f"{path}: cannot derive the retain config from forget='{forget}'; "
                          "pass retain=<config> (e.g. retain90)")
    return f"retain{100 - int(m.group(1))}"
