"""Linear probe: can a logistic regression on the hidden states still pick a forgotten fact's answer?

Following Lynch et al. 2024 ("Eight methods to evaluate robust unlearning in LLMs"): a fact's
candidate values are its gold answer and the benchmark's perturbed answers (wrong answers of the same
form). Each question is run with each candidate as its answer, and the residual stream at the
candidate's last token, at one layer, is the probe's input. The probe is a logistic regression (true
candidate vs the others, features standardised, classes weighted equally) fit on the *retain* items,
which the unlearned model still knows, then asked to choose on each forget item: the item is found
when the gold candidate scores strictly above every perturbed one (a tie knows nothing).

The probe is fit anew on every model it reads, so its control — the gold model, which never saw the
forget set, probed the same way — says how often a probe picks the right value from the question and
the candidates' surface alone; chance is 1 / (1 + perturbed answers). Weights untouched, hidden states
needed: a served model is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data import Item
from ..errors import UnpactError
from ..scoring import require
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting
from .internals import blocks, read_layer, resolve_layer


def candidates(item: Item) -> list[str]:
    """The gold answer first, then its distinct perturbed answers (one equal to the gold is dropped)."""
    gold = item.answer.strip()
    out = [gold]
    for p in item.perturbed_answers:
        if p.strip() and p.strip().lower() not in (c.lower() for c in out):
            out.append(p.strip())
    return out


def candidate_states(scorer, items: Sequence[Item], layer: int) -> list[np.ndarray]:
    """Per item, the hidden state [C, H] (float32) at ``layer`` (index into ``hidden_states``) at the
    last token of its question followed by each candidate answer (`candidates`, gold first)."""
    fmt = scorer.fmt
    seqs, owner = [], []
    for i, it in enumerate(items):
        q = fmt.encode(it.question).ids
        for c in candidates(it):
            seqs.append(q + fmt.encode_answer(c))
            owner.append(i)

    rows = [r.astype(np.float32) for r in read_layer(scorer, seqs, layer)]
    out: list[list[np.ndarray]] = [[] for _ in items]
    for i, r in zip(owner, rows, strict=True):
        out[i].append(r)
    return [np.stack(r) for r in out]


def fit_probe(states: Sequence[np.ndarray], c: float = 1.0, seed: int = 0):
    """A logistic regression telling the first row of each [C, H] array (the gold candidate) from the
    other rows; items with one candidate add nothing. Features are standardised with the training
    set's mean and spread. Returns a function [C, H] → [C] scores."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    usable = [s for s in states if len(s) > 1]
    if not usable:
        raise UnpactError("probe: no training item has a perturbed answer to tell the gold from; the probe needs "
                          "items with perturbed_answers (TOFU's, the built-in benchmark's)")
    x = np.concatenate(usable)
    y = np.concatenate([np.arange(len(s)) == 0 for s in usable]).astype(int)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                                               random_state=seed))
    probe.fit(x, y)
    return probe.decision_function


def probe_choices(score, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Per item [C, H]: whether the gold row (0) scores strictly above every other row ([N] bool), and
    the row the probe prefers (ties to the first); an item with one candidate is never found."""
    found, chosen = [], []
    for s in states:
        v = score(s)
        chosen.append(int(np.argmax(v)))
        found.append(len(v) > 1 and bool(v[0] > v[1:].max()))
    return np.array(found, dtype=bool), chosen


@dataclass
class ProbeSettings:
    layer: int = setting(-1, "hidden layer probed (0 = embeddings, L = last block, -1 = the middle block)",
                         lambda n: n >= -1, "use a layer index ≥ 0, or -1 for the middle block")
    c: float = setting(1.0, "inverse L2 regularisation strength of the logistic regression",
                       lambda c: c > 0, "use a positive value")


@register
class Probe(Attack):
    """A logistic-regression probe fit on retain items' candidate states, choosing among each forget
    item's candidates (`candidate_states`, `fit_probe`, `probe_choices`)."""

    name = "probe"
    help = "a logistic-regression probe on one layer's states, fit on retain, picks each forget item's answer"
    order = 8
    default = False  # opt-in: configs/demo-all-attacks.yaml runs it (README: cost per cell)
    needs_weights = True
    needs = "reads the hidden states"
    channel = "probe"
    control = "the gold model probed the same way (its own probe), else never-known retain items"
    Settings = ProbeSettings

    def planned(self, ctx: AttackContext, settings: ProbeSettings):
        if not any(it.perturbed_answers for it in ctx.splits.get("retain") or []):
            raise UnpactError("recovery.attacks lists probe, but no retain item has perturbed answers to tell the "
                              "gold from; use a benchmark with perturbed answers (builtin, TOFU) or drop probe")
        for split in ("forget", "retain"):
            items = ctx.splits.get(split) or []
            longest = [max(candidates(it), key=len) for it in items]
            yield split, [f"{it.question} {c}" for it, c in zip(items, longest, strict=True)]

    def run(self, ctx: AttackContext, settings: ProbeSettings) -> dict[AttackKey, AttackRun]:
        require(ctx.scorer, "the probe", "hidden_states")
        layer = resolve_layer(settings.layer, len(blocks(ctx.scorer.model)), "recovery.probe_layer")
        if not ctx.forget:  # nothing forgotten to probe: no probe to fit
            return {AttackKey(self.name): AttackRun([], [], correct=[], details={"layer": layer})}
        score = fit_probe(candidate_states(ctx.scorer, ctx.splits["retain"], layer), settings.c, ctx.seed)
        found, chosen = probe_choices(score, candidate_states(ctx.scorer, ctx.forget, layer))
        said = [candidates(it)[k] for it, k in zip(ctx.forget, chosen, strict=True)]
        return {AttackKey(self.name): AttackRun(ctx.questions, said, correct=found.tolist(),
                                                details={"layer": layer})}

