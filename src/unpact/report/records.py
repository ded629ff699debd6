"""Per-item records of one unlearned model (``records.jsonl``): what the report's item views and
`unpact results` show, built from the stored results alone."""

from __future__ import annotations

import numpy as np

from ..attribution import track
from ..data import SPLITS, Item
from ..recovery import ATTACKS, AttackKey

# the channels that reach the fact by asking (`unpact.recovery.base.CHANNELS`)
PROMPT_CHANNELS = ("rewrite", "sampling")


def _attacks_of_item(result: dict, i: int) -> dict[str, dict]:
    """Every attack run on forget item ``i``: the prompt, the answer, whether it was correct, and
    whether the run changed the weights. A run that did not ask item ``i`` (the study attacks only
    the forgotten items) is left out."""
    out = {}
    for name, run in result["attacks"].items():
        key = AttackKey.parse(name)
        if key.split == "forget" and run.get("attacked", [True] * (i + 1))[i]:
            out[name] = {"prompt": run["prompts"][i], "answer": run["answers"][i], "correct": bool(run["correct"][i]),
                         "changes_weights": key.changes_weights, "channel": ATTACKS[key.attack].channel}
    return out


def outcome(before_ok: bool, after_ok: bool, attacks: dict | None = None) -> str:
    """What happened to one item: not_known, kept, destroyed (retain/utility), recovered or forgotten.

    "recovered" means through the prompt alone: a prompt attack other than a placebo answered it. A
    weight attack's answer, or a white-box reading (logit lens, probe, direction ablation), says the
    fact is still in the model, not that asking brings it back."""
    if not before_ok:
        return "not_known"
    if after_ok:
        return "kept"
    if attacks is None:
        return "destroyed"
    recovered = any(v["correct"] for k, v in attacks.items()
                    if not AttackKey.parse(k).is_placebo and not v["changes_weights"]
                    and v.get("channel", "rewrite") in PROMPT_CHANNELS)
    return "recovered" if recovered else "forgotten"


def records(base: dict, result: dict, splits: dict[str, list[Item]], alpha: float, beta: int) -> list[dict]:
    """One row per item of every split: answers before/after and their token log-prob change; forget
    items also with contributions before/after, KeyTokens, tracking and every attack's answer."""
    rows = []
    for split in SPLITS:
        before, after = base["answers"][split], result["answers"][split]
        for i, it in enumerate(splits[split]):
            row = {"method": result["method"], "item_id": it.id, "split": split, "question": it.question,
                   "gold": it.answer, "answer_before": before["answers"][i], "answer_after": after["answers"][i],
                   "correct_before": bool(before["correct"][i]), "correct_after": bool(after["correct"][i]),
                   "answer_tokens": base["answer_tokens"][split][i]["tokens"],
                   "answer_keyword": base["answer_tokens"][split][i]["keyword"],
                   "token_delta": [a - b for b, a in zip(before["token_logprobs"][i], after["token_logprobs"][i],
                                                         strict=True)]}
            if split != "forget":
                row["outcome"] = outcome(row["correct_before"], row["correct_after"])
                rows.append(row)
                continue
            b, a = base["attributions"]["forget"][i], result["attributions"][i]
            t = track(np.array(b["contributions"]), np.array(a["contributions"]), alpha, beta)
            attacks = _attacks_of_item(result, i)
            row.update({
                "tokens": b["tokens"], "contrib_before": b["contributions"], "contrib_after": a["contributions"],
                "key_before": t.pop("key_before"), "key_after": t.pop("key_after"),
                "lp_before": b["lp"], "lp_after": a["lp"], "keywords": b["keywords"],
                "attacks": attacks, "outcome": outcome(row["correct_before"], row["correct_after"], attacks),
                "tracking": t,
            })
            rows.append(row)
    return rows
