"""Leave-one-out prompt attribution, the unPact contribution:

    C(f, y) = LP(x, y) − LP(x \\ f, y)

for every feature f of the question (a token, a word, or a user span; the template and special tokens
are not attributed). Three ways to take f out of the prompt (``ablation``):

- ``delete`` (the paper's form): the tokens are removed, the prompt gets shorter;
- ``replace``: each token of f becomes a baseline token (the pad token by default) — captum's
  FeatureAblation; the prompt keeps its length and positions;
- ``mask``: the tokens stay but get attention mask 0, so no other token can see them; every token keeps
  its original position id (see `unpact.scoring.pack`).

The ablations of every prompt, and the prompts of a whole list, go through the scorer as one list of
sequences, so batching and length bucketing happen once for all of them. Each ablated prompt starts
with the intact prompt's tokens up to the feature's first token — same ids, same positions — so by
default (``prefix_reuse``) the intact prompts' key/value caches are computed once and every ablation
runs only from its first changed token on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import UnpactError
from ..models.prompt import Encoded
from ..scoring import Scorer
from .features import make_features

ABLATIONS = ("delete", "replace", "mask")


@dataclass
class Attribution:
    """One prompt's attribution (every method returns this type).

    tokens: [n_tok] question tokens as text; contributions: [n] one score per feature (n = n_tok for
    token features); lp: the attributed quantity of the intact prompt — LP(x, y), or the summed answer
    log-prob when ``target == "sum"``; ablated_lp: [n] that quantity with feature i ablated (perturbation
    methods; None for gradient methods); offsets: [n_tok] character spans in the question.

    Optional fields: feature_labels [n] and groups [n] (question-token indices per feature; None means
    one feature per token); per_answer_token [n, T]: the contribution to each answer token's log-prob
    (perturbation methods with ``per_answer_token=True``); f_baseline, completeness_gap and
    relative_gap: integrated gradients' F(baseline), |Σ attributions − (F(x) − F(baseline))| and that gap
    divided by |F(x) − F(baseline)|.
    """

    question: str
    answer: str
    tokens: list[str]
    contributions: np.ndarray
    lp: float
    ablated_lp: np.ndarray | None
    offsets: list[tuple[int, int]] = field(default_factory=list)
    method: str = "loo_delete"
    feature_labels: list[str] | None = None
    groups: list[list[int]] | None = None
    target: str = "mean"
    per_answer_token: np.ndarray | None = None
    f_baseline: float | None = None
    completeness_gap: float | None = None
    relative_gap: float | None = None

    @property
    def labels(self) -> list[str]:
        """Display string of every feature ([n])."""
        return self.feature_labels if self.feature_labels is not None else self.tokens

    @property
    def feature_groups(self) -> list[list[int]]:
        """Question-token indices of every feature ([n] lists)."""
        return self.groups if self.groups is not None else [[i] for i in range(len(self.tokens))]

    def to_dict(self) -> dict:
        """JSON-ready dict; the keys of the original format always, the optional fields when set."""
        d = {"question": self.question, "answer": self.answer, "method": self.method,
             "tokens": self.tokens, "contributions": [float(c) for c in self.contributions],
             "lp": float(self.lp)}
        if self.target != "mean":
            d["target"] = self.target
        if self.feature_labels is not None:
            d["feature_labels"] = list(self.feature_labels)
            d["groups"] = [list(g) for g in self.feature_groups]
        if self.ablated_lp is not None:
            d["ablated_lp"] = [float(v) for v in self.ablated_lp]
        if self.per_answer_token is not None:
            d["per_answer_token"] = np.asarray(self.per_answer_token, dtype=float).tolist()
        for key in ("f_baseline", "completeness_gap", "relative_gap"):
            if getattr(self, key) is not None:
                d[key] = float(getattr(self, key))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Attribution:
        """Inverse of `to_dict` (offsets are not exported and come back empty)."""

        def arr(k):
            return None if d.get(k) is None else np.asarray(d[k], dtype=np.float64)

        return cls(question=d["question"], answer=d["answer"], tokens=list(d["tokens"]),
                   contributions=np.asarray(d["contributions"], dtype=np.float64), lp=float(d["lp"]),
                   ablated_lp=arr("ablated_lp"), method=d.get("method", "loo_delete"),
                   feature_labels=d.get("feature_labels"), groups=d.get("groups"), target=d.get("target", "mean"),
                   per_answer_token=arr("per_answer_token"), f_baseline=d.get("f_baseline"),
                   completeness_gap=d.get("completeness_gap"), relative_gap=d.get("relative_gap"))


def ablate(enc: Encoded, remove: Sequence[int], mode: str, baseline_id: int) -> tuple[list[int], list[int]]:
    """The prompt with question tokens ``remove`` (indices into the question) taken out.

    Returns (prompt ids, positions to hide from attention — non-empty only for ``mask``).
    """
    q, drop = enc.question_ids, set(remove)
    if mode == "delete":
        return enc.with_question([t for j, t in enumerate(q) if j not in drop]).ids, []
    if mode == "replace":
        return enc.with_question([baseline_id if j in drop else t for j, t in enumerate(q)]).ids, []
    if mode == "mask":
        return list(enc.ids), [enc.span[0] + j for j in sorted(drop)]
    raise UnpactError(f"unknown ablation {mode!r}: use one of {', '.join(ABLATIONS)}")


def check_target(target: str) -> None:
    if target not in ("mean", "sum"):
        raise UnpactError(f"unknown attribution target {target!r}: use 'mean' (LP) or 'sum' (summed log-prob)")


def loo_attributions(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], *,
                     ablation: str = "delete", features: str = "tokens",
                     spans: Sequence[Sequence[tuple[int, int]] | None] | None = None,
                     baseline_id: int | None = None, target: str = "mean",
                     per_answer_token: bool = False, prefix_reuse: bool = True) -> list[Attribution]:
    """Leave-one-feature-out attributions of every (question, answer) pair, scored in one batched call.

    ablation: "delete" | "replace" | "mask" (module docstring); features: "tokens" | "words";
    spans: per question, a list of (start, end) character spans of the stripped question, or None for
    ``features`` (overrides ``features`` where given); baseline_id: the replacement token of
    ``replace`` (default: the scorer's pad id); target: "mean" (LP, the unPact quantity) or "sum" (the
    summed answer log-prob, captum's quantity); per_answer_token: also keep the [n, T] matrix of
    contributions to every answer token's log-prob; prefix_reuse: compute the key/values of each
    prompt once and run every ablation only from its first ablated token on (`Scorer.score_with_prefixes`:
    the tokens before it keep their ids and positions under all three ablations); the scores equal the
    plain path's up to float rounding (1e-5 in float32), it is only faster, the more so the later in a
    long prompt the features sit.

    With the defaults the result is exactly the original delete-one-token attribution.
    """
    check_target(target)
    if ablation not in ABLATIONS:
        raise UnpactError(f"unknown ablation {ablation!r}: use one of {', '.join(ABLATIONS)}")
    if spans is not None and len(spans) != len(questions):
        raise UnpactError(f"{len(spans)} span lists for {len(questions)} questions: give one per question (or None)")
    fmt = scorer.fmt
    baseline = scorer.pad_id if baseline_id is None else int(baseline_id)
    if ablation == "replace" and baseline is None:
        raise UnpactError("the replace ablation needs a baseline token id and this model has no pad token; "
                          "pass baseline_id (--baseline-id) or use the delete ablation")
    encoded = [fmt.encode(q) for q in questions]
    feats, prompts, answer_ids, hidden, base_of, shared = [], [], [], [], [], []
    for k, (enc, answer) in enumerate(zip(encoded, answers, strict=True)):
        f = make_features(features, questions[k], fmt.question_offsets(questions[k]),
                          fmt.token_strings(enc.question_ids), None if spans is None else spans[k])
        feats.append(f)
        a = fmt.encode_answer(answer)
        variants = [(list(enc.ids), [])] + [ablate(enc, g, ablation, baseline) for g in f.groups]
        prompts += [v[0] for v in variants]
        hidden += [v[1] for v in variants]
        answer_ids += [a] * len(variants)
        base_of += [k] * len(variants)
        # ablating f leaves every token before its first one as it was (ids and positions)
        shared += [len(enc.ids)] + [enc.span[0] + min(g, default=len(enc.question_ids)) for g in f.groups]
    hide = hidden if ablation == "mask" else None
    if prefix_reuse:
        scores = scorer.score_with_prefixes([enc.ids for enc in encoded], prompts, answer_ids, base_of, shared, hide)
    else:
        scores = scorer.score_ids(prompts, answer_ids, hide)
    per_token = scores.per_token
    value = scores.mean if target == "mean" else np.array([t.sum() for t in per_token])
    results, start = [], 0
    for k, (enc, f) in enumerate(zip(encoded, feats, strict=True)):
        n = len(f.groups)
        full, ablated = float(value[start]), value[start + 1:start + 1 + n]
        matrix = None
        if per_answer_token:
            matrix = per_token[start][None, :] - np.stack(per_token[start + 1:start + 1 + n]) if n else \
                np.zeros((0, len(per_token[start])))
        start += n + 1
        custom = not (features == "tokens" and (spans is None or spans[k] is None))
        results.append(Attribution(
            question=questions[k], answer=answers[k], tokens=fmt.token_strings(enc.question_ids),
            contributions=full - ablated, lp=full, ablated_lp=ablated, offsets=fmt.question_offsets(questions[k]),
            method=f"loo_{ablation}", feature_labels=f.labels if custom else None,
            groups=f.groups if custom else None, target=target, per_answer_token=matrix,
        ))
    return results


from .registry import attribution_method  # noqa: E402  (here, beside the method it registers)


@attribution_method("loo", needs_weights=False,
                    help="leave-one-out: LP(x, y) − LP(x without the feature, y), by delete, replace or mask")
def _loo(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], *, ablation: str, features: str,
         spans: Sequence[Sequence[tuple[int, int]] | None] | None, baseline_id: int | None, target: str,
         per_answer_token: bool = False, prefix_reuse: bool = True, **_: object) -> list[Attribution]:
    return loo_attributions(scorer, questions, answers, ablation=ablation, features=features, spans=spans,
                            baseline_id=baseline_id, target=target, per_answer_token=per_answer_token,
                            prefix_reuse=prefix_reuse)
