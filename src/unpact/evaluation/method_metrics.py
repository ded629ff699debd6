"""One unlearned model's numbers, from what the study stored: the dilemma rates, recovery per attack
with its interval and control, tracking aggregates and the penalisation profile (docs/design.md:
Rates, Controls, Tracking, Penalisation profile).

Pure functions over the stored results (``base``: the original model's; ``result``: the unlearned
model's), so `unpact report` and `unpact results` can recompute them from a run directory alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..attribution import aggregate, penalisation_profile, track
from ..data import SPLITS
from ..recovery import ATTACKS, AttackKey
from ..recovery.base import CHANNELS
from .calibration import Calibrated, calibrate, family, still_there, strongest, verdict_note
from .quadrant import quadrant
from .rates import destructive_rate, forget_efficacy, keep_counts, recovery_rate, wilson_interval


def accuracy(correct: Sequence) -> float | None:
    """Share correct; None for a split the benchmark does not have (MUSE and MMLU have no utility)."""
    return float(np.mean(correct)) if len(correct) else None


def _correct(answers: dict) -> dict[str, np.ndarray]:
    return {s: np.array(answers[s]["correct"]) for s in SPLITS}


def recovery(base: dict, result: dict) -> tuple[dict, dict, dict]:
    """Per attack run on the forget items: (recovery rate, 95% Wilson interval, FocusOnKey's excess
    over its random-word placebo), each keyed by the run's name, in run order."""
    cb, ca = _correct(base["answers"]), _correct(result["answers"])
    forgotten = cb["forget"].astype(bool) & ~ca["forget"].astype(bool)
    rates, interval, excess = {}, {}, {}
    keys = {name: AttackKey.parse(name) for name in result["attacks"]}
    for name, entry in result["attacks"].items():
        if keys[name].split != "forget":
            continue
        hit = np.array(entry["correct"], dtype=bool)
        rates[name] = recovery_rate(cb["forget"], ca["forget"], hit)
        interval[name] = wilson_interval(int((hit & forgotten).sum()), int(forgotten.sum()))
    for name, rate in rates.items():
        key = keys[name]
        if key.attack == "focus_on_key" and not key.is_placebo:
            placebo = AttackKey(key.attack, key.variant, "placebo").name
            excess[name] = None if rate is None else rate - (rates[placebo] or 0.0)
    return rates, interval, excess


def rewrite_control(base: dict, result: dict) -> dict[str, float | None]:
    """Per rewrite variant run on retain/utility items (FocusOnKey's do-no-harm control): the share of
    the items the unlearned model still answers that it also answers rewritten."""
    known_after = np.concatenate([_correct(result["answers"])[s] for s in ("retain", "utility")]).astype(bool)
    kept: dict[str, dict[str, list]] = {}
    for name, entry in result["attacks"].items():
        key = AttackKey.parse(name)
        if key.split != "forget":
            kept.setdefault(key.variant, {})[key.split] = entry["correct"]
    out = {}
    for variant, by_split in kept.items():
        hits = np.concatenate([np.array(by_split[s]) for s in ("retain", "utility")])
        out[variant] = float(hits[known_after].mean()) if known_after.any() else None
    return out


def calibrated(base: dict, result: dict, control: dict | None) -> list[Calibrated]:
    """Every attack run on the forget items but FocusOnKey's placebos (its keyword control, see
    `keyword_specificity`), read against ``control`` (`calibration.calibrate`)."""
    cb, ca = _correct(base["answers"]), _correct(result["answers"])
    forgotten = cb["forget"].astype(bool) & ~ca["forget"].astype(bool)
    runs = {name: entry["correct"] for name, entry in result["attacks"].items()
            if (key := AttackKey.parse(name)).split == "forget" and not key.is_placebo}
    return calibrate(runs, forgotten, control)


def keyword_specificity(base: dict, result: dict) -> dict[str, dict]:
    """The paper's finding 2, kept apart from the verdict: per FocusOnKey run, its recovery minus its
    random-word placebo's on the same forgotten items, with Newcombe's interval and a one-sided p-value
    (does emphasising the KeyToken words matter, beyond rewriting the question at all?)."""
    cb, ca = _correct(base["answers"]), _correct(result["answers"])
    forgotten = cb["forget"].astype(bool) & ~ca["forget"].astype(bool)
    n, out = int(forgotten.sum()), {}
    for name, entry in result["attacks"].items():
        key = AttackKey.parse(name)
        if key.attack != "focus_on_key" or key.is_placebo or key.split != "forget":
            continue
        placebo = result["attacks"][AttackKey(key.attack, key.variant, "placebo").name]["correct"]
        hits = int((np.asarray(entry["correct"], bool) & forgotten).sum())
        control = int((np.asarray(placebo, bool) & forgotten).sum())
        c = Calibrated(name, hits, n, control, n, "placebo rewrite")
        out[name] = {"excess": c.value, "ci95": list(c.ci95) if c.ci95 else None, "p_value": c.p_value, "n": n}
    return out


def where_still(attacks: list[Calibrated], n_known: int, n_still_answered: int,
                adjusted: dict[str, dict] | None = None) -> dict[str, dict | None]:
    """The "where it is still" row: per channel (`unpact.recovery.base.CHANNELS`), the evidence that
    the forgotten facts are still in the model through it.

    ``output``: the known forget items the unlearned model still answers plainly (``n_still_answered``
    of ``n_known``). Every other channel: its strongest calibrated run (`calibration.strongest` among
    the runs of the attacks declaring that channel), with ``still`` true when its 95% interval lies
    above 0 and its Holm-adjusted p-value over all of ``attacks`` is below 0.05 (the channel brings
    back more than the same attack where the knowledge is absent, beyond chance and beyond picking the
    best of many attacks); None where no attack of the channel ran. ``adjusted``: `calibration.family`
    of ``attacks`` (computed here when not given)."""
    adjusted = adjusted if adjusted is not None else family(attacks)
    out: dict[str, dict | None] = {
        "output": {"hits": n_still_answered, "n": n_known,
                   "rate": n_still_answered / n_known if n_known else None, "still": n_still_answered > 0}}
    for channel in list(CHANNELS)[1:]:
        best = strongest([c for c in attacks if ATTACKS[AttackKey.parse(c.attack).attack].channel == channel])
        if best is None:
            out[channel] = None
            continue
        out[channel] = {**best.to_dict(), **adjusted[best.attack],
                        "still": still_there(best.ci95, adjusted[best.attack]["p_holm"])}
    return out


def layer_profile(result: dict, forgotten: np.ndarray, control: dict | None) -> dict | None:
    """The logit lens's layer profile (`unpact.recovery.logit_lens`): per layer 1 … L, the median rank
    and mean log-probability of the gold answer's first token over the forgotten items, and the same
    over the control's items (the gold model's forget items it does not answer, or the never-known
    items) where the control kept its details. None when the logit lens did not run."""
    entry = result["attacks"].get("logit_lens")
    if not entry or not entry.get("details"):
        return None

    def profile(details: dict, rows: np.ndarray) -> dict:
        # rows the attack did not ask (None: the study attacks only forgotten items) are never chosen
        at = np.flatnonzero(rows)
        ranks = np.array([details["ranks"][i] for i in at], float).reshape(len(at), -1)
        lps = np.array([details["logprobs"][i] for i in at], float).reshape(len(at), -1)
        if not len(ranks):
            return {"n": 0, "median_rank": None, "mean_logprob": None}
        return {"n": int(len(ranks)), "median_rank": np.median(ranks, 0).tolist(),
                "mean_logprob": np.round(lps.mean(0), 4).tolist()}

    d = entry["details"]
    out = {"layers": d["layers"], "rank_threshold": d["rank_threshold"], "forgotten": profile(d, forgotten),
           "control": None}
    theirs = ((control or {}).get("details") or {}).get("logit_lens")
    if theirs:
        rows = np.asarray(control.get("known", [True] * len(theirs["ranks"])), bool)
        out["control"] = {"kind": control["kind"], **profile(theirs, rows)}
    return out


def method_metrics(base: dict, result: dict, *, recovery_threshold: float, destructive_threshold: float,
                   alpha: float, beta: int, standard: dict | None, control: dict | None = None) -> dict:
    """The metrics.json entry of one unlearned model; ``standard`` are its benchmark metrics
    (`unpact.study.standard.standard_metrics`), computed by the caller; ``control`` what the attacks
    yield without the knowledge (`calibration.calibrate`).

    The quadrant's recovery side is the strongest calibrated attack (docs/design.md, Dilemma quadrant
    and verdict): a method is insufficient when any attack brings back at least ``recovery_threshold``
    of its forgotten items beyond what the same attack gets where the knowledge is absent."""
    cb, ca = _correct(base["answers"]), _correct(result["answers"])
    keep_before = np.concatenate([cb["retain"], cb["utility"]])
    keep_after = np.concatenate([ca["retain"], ca["utility"]])
    rates, interval, excess = recovery(base, result)
    destructive = destructive_rate(keep_before, keep_after)
    attacks = calibrated(base, result, control)
    best, adjusted = strongest(attacks), family(attacks)
    known = cb["forget"].astype(bool)
    tracking_rows = [track(np.array(b["contributions"]), np.array(a["contributions"]), alpha, beta)
                     for b, a, k in zip(base["attributions"]["forget"], result["attributions"], known, strict=True)
                     if k]
    return {
        "forget_efficacy": forget_efficacy(cb["forget"], ca["forget"]),
        "n_known": int(known.sum()), "n_forgotten": int((known & ~ca["forget"].astype(bool)).sum()),
        "recovery_rate": rates, "recovery_ci95": interval, "recovery_excess": excess,
        "calibrated": {c.attack: {**c.to_dict(), **adjusted[c.attack]} for c in attacks},
        "strongest_attack": None if best is None else {
            **best.to_dict(), **adjusted[best.attack],
            "note": verdict_note(best, recovery_threshold, **adjusted[best.attack])},
        "layer_profile": layer_profile(result, known & ~ca["forget"].astype(bool), control),
        "where_still": where_still(attacks, int(known.sum()), int((known & ca["forget"].astype(bool)).sum()),
                                   adjusted),
        "keyword_specificity": keyword_specificity(base, result),
        "rewrite_control": rewrite_control(base, result),
        "mia_auc": result.get("mia_auc"),
        "standard": standard,
        "destructive_rate": destructive,
        "destructive_rate_by_split": {s: destructive_rate(cb[s], ca[s]) for s in ("retain", "utility")},
        "kept_items": keep_counts(keep_before, keep_after),
        "accuracy": {s: accuracy(ca[s]) for s in SPLITS},
        "quadrant": quadrant(None if best is None else best.value, destructive, recovery_threshold,
                             destructive_threshold),
        "penalisation": {s: penalisation_profile(
            [np.array(t) for t in base["answers"][s]["token_logprobs"]],
            [np.array(t) for t in result["answers"][s]["token_logprobs"]],
            [np.array(a["keyword"], dtype=bool) for a in base["answer_tokens"][s]]) for s in SPLITS},
        "tracking": aggregate(tracking_rows),
        # wall-clock times are not metrics (they differ run to run): see `timings`
        "train": {k: result["train"].get(k) for k in ("steps", "final_loss", "trainable_parameters")},
    }
