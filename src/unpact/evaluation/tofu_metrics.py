"""TOFU metrics (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs") over answer log-probs.

Why: these are the numbers TOFU reports — answer probability, truth ratio, forget quality and model
utility — so a study can be compared with published TOFU results. Inputs are per-token answer log-probs
``log p(y_t | q, y_<t)``, a 1-D array [T] per answer (``Scorer.score_ids(...).per_token``).

Reference followed: the benchmark's code, locuslab/tofu ``evaluate_util.py`` and ``aggregate_eval_stat.py``,
cross-checked with locuslab/open-unlearning ``src/evals/metrics/memorization.py``, ``privacy.py``,
``utility.py``. Every probability is length-normalised, P(a|q)^(1/|a|) = exp(mean token log-prob): TOFU
keeps per-token average losses (avg_gt_loss, avg_paraphrased_loss, average_perturb_loss) and
exponentiates those, for the forget/retain "Prob." as well as for the real-authors/world-facts ratio.
Unlike open-unlearning, no 1e-10 is added to denominators: zeros and empties raise UnpactError instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import ks_2samp

from ..errors import UnpactError
from .correctness import rouge_l_recall
from .mia import _same_length, _token_lps

Answers = Sequence[ArrayLike]  # N answers, each a [T_i] array of token log-probs


def _mean_lps(answers: Answers, what: str) -> np.ndarray:
    """Mean token log-prob per answer, i.e. log P_norm: N arrays → [N]."""
    if len(answers) == 0:
        raise UnpactError(f"{what}: no answers given")
    return np.array([_token_lps(a, what).mean() for a in answers])


def _positive(values: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(values, np.float64).ravel()
    if arr.size == 0 or not np.all(arr > 0):
        raise UnpactError(f"{what}: expected a non-empty array of positive truth ratios")
    return arr


def normalised_probability(lp_sum: ArrayLike, lengths: ArrayLike) -> np.ndarray:
    """P(a|q)^(1/|a|) = exp(lp_sum / length): summed answer log-probs [N] and token counts [N] → [N].

    The geometric mean of the token probabilities, so answers of different lengths compare fairly
    (TOFU's exp(−avg_gt_loss)).
    """
    lp_sum, lengths = np.asarray(lp_sum, np.float64), np.asarray(lengths, np.float64)
    if lp_sum.shape != lengths.shape:
        raise UnpactError(f"normalised_probability: lp_sum {lp_sum.shape} and lengths {lengths.shape} differ in shape")
    if np.any(lengths <= 0):
        raise UnpactError("normalised_probability: every answer needs at least one token (lengths must be > 0)")
    return np.exp(lp_sum / lengths)


def tofu_probability(true_lps: Answers, perturbed_lps: Sequence[Answers] | None = None) -> float:
    """TOFU "Prob.", averaged over N items.

    - ``perturbed_lps`` None (forget and retain sets): mean of P_norm(true answer).
    - ``perturbed_lps`` given (real authors, world facts; K_i ≥ 1 wrong answers for item i):
      mean of P_norm(true) / (P_norm(true) + Σ_j P_norm(perturbed_j)).

    Shapes: ``true_lps`` N arrays [T_i]; ``perturbed_lps`` N lists of K_i arrays.
    """
    true = _mean_lps(true_lps, "tofu_probability: true answers")
    if perturbed_lps is None:
        return float(np.mean(np.exp(true)))
    _same_length(true_lps, perturbed_lps, "tofu_probability: true and perturbed answers")
    # P_t / (P_t + Σ P_j) = 1 / (1 + Σ exp(log P_j − log P_t)): no 0/0 when the probabilities underflow.
    shares = [1.0 / (1.0 + np.exp(_mean_lps(wrong, "tofu_probability: perturbed answers") - t).sum())
              for t, wrong in zip(true, perturbed_lps, strict=True)]
    return float(np.mean(shares))


def truth_ratio(paraphrased_lps: Answers, perturbed_lps: Sequence[Answers]) -> np.ndarray:
    """Per-item truth ratio R = P_norm(perturbed) / P_norm(paraphrased): [N].

    R near 1: the model cannot tell the right answer from wrong ones (what forgetting should give);
    R near 0: it strongly prefers the right one. Across the K_i perturbed answers the *log*
    probabilities are averaged (a geometric mean of P_norm), as both TOFU's code
    (``average_perturb_loss.mean(-1)``) and open-unlearning (``aggregate_to_1D`` of avg losses) do; the
    paper's formula writes an arithmetic mean of probabilities instead. For real authors and world facts
    TOFU has no paraphrase: pass the true answer as ``paraphrased_lps``.
    """
    _same_length(paraphrased_lps, perturbed_lps, "truth_ratio: paraphrased and perturbed answers")
    para = _mean_lps(paraphrased_lps, "truth_ratio: paraphrased answers")
    pert = np.array([_mean_lps(wrong, "truth_ratio: perturbed answers").mean() for wrong in perturbed_lps])
    return np.exp(pert - para)


def truth_ratio_closer_to_1(ratios: ArrayLike) -> float:
    """Forget-set aggregate, mean(min(R, 1/R)) in (0, 1]: 1 when right and wrong answers are equally likely."""
    r = _positive(ratios, "truth_ratio_closer_to_1")
    return float(np.mean(np.minimum(r, 1 / r)))


def truth_ratio_true_better(ratios: ArrayLike) -> float:
    """Retain / real-authors / world-facts aggregate, mean(max(0, 1 − R)) in [0, 1): higher = right answer preferred."""
    r = _positive(ratios, "truth_ratio_true_better")
    return float(np.mean(np.maximum(0.0, 1 - r)))


def forget_quality(unlearned_truth_ratios: ArrayLike, retrained_truth_ratios: ArrayLike) -> float:
    """KS-test p-value between per-item forget-set truth ratios of the unlearned and the retrained model.

    Shapes [N], [M] (raw R from `truth_ratio`, not the min(R, 1/R) form). High p: the unlearned model's
    truth ratios are indistinguishable from a model never trained on the forget set; a model against
    itself gives 1.0. open-unlearning (privacy.py ks_test) tests R; TOFU's aggregate_eval_stat.py tests
    1/R — the same p-value, since the KS statistic is unchanged by a strictly monotone map of both samples.
    """
    unlearned = _positive(unlearned_truth_ratios, "forget_quality: unlearned truth ratios")
    retrained = _positive(retrained_truth_ratios, "forget_quality: retrained truth ratios")
    return float(ks_2samp(unlearned, retrained).pvalue)


def model_utility(values: Mapping[str, float]) -> float:
    """TOFU model utility: harmonic mean of the non-forget numbers; {name: value} → scalar.

    TOFU uses nine: retain / real authors / world facts × (`tofu_probability`, mean ROUGE-L recall,
    `truth_ratio_true_better`). The harmonic mean drops sharply when any one of them collapses; a zero
    anywhere gives 0. Missing entries are not imputed: the mean is taken over the entries given, as both
    references do (scipy ``hmean`` over whatever results are present), so pass all nine to reproduce TOFU.
    """
    if not values:
        raise UnpactError("model_utility: no values given; pass the nine TOFU utility numbers by name")
    for name, v in values.items():
        if v is None or not np.isfinite(v) or v < 0:
            raise UnpactError(f"model_utility: value {name!r} must be a finite number >= 0, got {v!r}")
    arr = np.array(list(values.values()), np.float64)
    return 0.0 if np.any(arr == 0) else float(arr.size / np.sum(1 / arr))


def tofu_rouge_l(predictions: Sequence[str], golds: Sequence[str]) -> float:
    """TOFU's ROUGE score: mean ROUGE-L recall of greedy answers against the gold answers, on Porter
    stems (TOFU's evaluate_util.py builds its scorer with ``use_stemmer=True``); [N], [N] → [0, 1]."""
    _same_length(predictions, golds, "tofu_rouge_l: predictions and golds")
    if not predictions:
        raise UnpactError("tofu_rouge_l: no answers given")
    return float(np.mean([rouge_l_recall(p, g, stem=True) for p, g in zip(predictions, golds, strict=True)]))


# ---------------------------------------------------------------- the study's TOFU numbers (metrics.json)
# Registered in the order metrics.json has always listed them: per split probability, ROUGE-L recall and
# truth ratio, then forget quality and model utility.

from .registry import Material, Missing, benchmark_metric  # noqa: E402  (below the formulas they use)


@benchmark_metric("tofu.probability", per_split=True,
                  help="TOFU 'Prob.': mean length-normalised probability of the gold answers "
                       "(normalised against the perturbed ones on the utility split)",
                  needs={"tofu.{split}.probability": "the split's answer probability (`tofu_raw`; needs items)"})
def _probability(m: Material) -> float:
    return m["tofu.{split}.probability"]


@benchmark_metric("tofu.rouge_l_recall", per_split=True,
                  help="TOFU 'ROUGE': mean ROUGE-L recall (Porter stems) of the greedy answers against the gold ones",
                  needs={"answers.{split}.answers": "the model's greedy answers to the split's questions",
                         "items.{split}": "the split's items (their gold answers)"})
def _rouge_l_recall(m: Material) -> float:
    return tofu_rouge_l(m["answers.{split}.answers"], [it.answer for it in m["items.{split}"]])


@benchmark_metric("tofu.truth_ratio", per_split=True,
                  help="TOFU 'Truth Ratio': mean min(R, 1/R) on forget, mean max(0, 1 − R) on other splits",
                  needs={"tofu.{split}.truth_ratios": "per-item truth ratios: items with perturbed answers"})
def _truth_ratio(m: Material) -> float:
    ratios = np.array(m["tofu.{split}.truth_ratios"])
    return truth_ratio_closer_to_1(ratios) if m.split == "forget" else truth_ratio_true_better(ratios)


@benchmark_metric("tofu.forget_quality",
                  help="TOFU 'Forget Quality': KS-test p-value of the forget-set truth ratios against the gold model's",
                  needs={"tofu.forget.truth_ratios": "forget-set truth ratios: forget items with perturbed answers",
                         "gold.tofu.forget.truth_ratios": "the gold model's (never trained on the forget set: "
                                                          "`unpact prepare --exclude forget`) forget-set truth ratios"})
def _forget_quality(m: Material) -> float:
    return forget_quality(m["tofu.forget.truth_ratios"], m["gold.tofu.forget.truth_ratios"])


@benchmark_metric("tofu.model_utility",
                  help="TOFU 'Model Utility': harmonic mean of the non-forget splits' probability, ROUGE and truth ratio",
                  needs={"tofu": "TOFU material (`tofu_raw_splits`)"})
def _model_utility(m: Material) -> float:
    # the same numbers in the same order as the per-split rows: the harmonic mean's float sum follows it
    parts = {f"{split}_{k}": v for split in m["tofu"] if split != "forget"
             for k, v in m.section[split].items() if v is not None}
    if not parts:
        raise Missing("no TOFU number outside the forget split (retain, utility)")
    return model_utility(parts)
