"""``forget_known``: a forget set of facts the original model actually knows.

A real pretrained model cannot forget what it never knew, so a study on published facts (e.g. TOFU's
world facts) draws its forget set from the items the original model answers correctly.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

from ..data import Item, builtin
from ..errors import UnpactError
from ..evaluation import item_correctness
from ..io import write_json
from .cache import cached, digest

if TYPE_CHECKING:
    from .runner import Study


def forget_known(study: Study, n: int | str, seed: int, compute: bool = True) -> bool:
    """Re-split the forget and retain items: ``n`` forget items drawn (seeded) from those the
    original model answers correctly (``"all"``: every one), every other one retain; utility stays.
    The selection is cached in ``data/forget_known.json``; with ``compute=False`` only a cached one is
    used. Returns whether the splits were re-split."""
    pool = study.splits["forget"] + study.splits["retain"]
    path = study.out / "data" / "forget_known.json"
    key = digest([n, seed, study.cfg.evaluation.rouge_threshold, study.cfg.generation, *study._precision(), study._model_files(),
                  [it.to_dict() for it in pool]])
    if (stored := cached(path, key)) is None and not compute:
        return False
    if stored is None:
        stored = _known_items(study, pool, n, seed, key)
        write_json(path, stored)
    chosen = set(stored["forget"])
    study.original_answers = stored.get("answers", {})
    study.splits = {**study.splits,  # utility (and a holdout) stay as they are
                    "forget": [replace(it, split="forget") for it in pool if it.id in chosen],
                    "retain": [replace(it, split="retain") for it in pool if it.id not in chosen]}
    if compute:
        builtin.save(study.splits, study.out / "data")
    return True


def _known_items(study: Study, pool: list[Item], n: int | str, seed: int, key: str) -> dict:
    """The original model's answers to ``pool`` and a seeded draw of ``n`` it answers correctly."""
    replies = study.open(study.model_dir).generate([it.question for it in pool])
    ok = item_correctness(replies, pool, study.cfg.evaluation.rouge_threshold)
    known = [it.id for it, k in zip(pool, ok, strict=True) if k]
    if n == "all":
        if not known:
            raise UnpactError(f"forget_known: all, but {study.model_dir} answers none of the {len(pool)} "
                              "forget/retain items correctly; there is nothing it could forget")
        n = len(known)
    if len(known) < n:
        raise UnpactError(f"forget_known: {n} requested but {study.model_dir} answers only {len(known)} of "
                          f"the {len(pool)} forget/retain items correctly; use forget_known ≤ {len(known)}")
    study.ui.info(f"forget_known: the original model answers {len(known)} of {len(pool)} items; "
                  f"{n} of them are the forget set")
    # the answers are kept for the original model's stage, which would generate them again
    return {"key": key, "forget": sorted(random.Random(seed).sample(known, n)), "known": known,
            "answers": {it.id: a for it, a in zip(pool, replies, strict=True)}}
