"""Membership-inference attacks (MIA): per-sample scores and the AUC that separates forget from holdout.

Why: MUSE's PrivLeak and open-unlearning's ``mia_*`` metrics ask whether an attacker can still tell the
forget set (trained on, then unlearned) from a holdout set (never trained on). Each attack turns one text
into a score; the AUC of forget vs holdout scores measures how well the attack separates them.

Reference followed: locuslab/open-unlearning ``src/evals/metrics/mia/`` (loss.py, zlib.py, min_k.py,
min_k_plus_plus.py, reference.py, utils.py); MUSE (swj0419/muse_bench ``metrics/privleak.py``) agrees
where noted. Inputs are per-token log-probs ``log p(x_t | x_<t)`` of the scored tokens, a 1-D array [T]
per text (``Scorer.score_ids(...).per_token``), and for Min-K%++ the full log-softmax rows [T, V]
(``answer_log_softmax``).

Sign convention: every score here is **higher = more likely a member**. open-unlearning signs its scores
like a loss (higher = less likely a member) and labels the forget set 0; MUSE negates its loss-like
statistic and labels the holdout set 1. `mia_auc` labels members (forget) 1 and non-members (holdout) 0,
so with this sign it equals open-unlearning's AUC ("1 when the forget data is much more likely than the
holdout data"); MUSE's PrivLeak AUC is 1 minus it (see `muse_metrics.privleak`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sized

import numpy as np
from numpy.typing import ArrayLike

from ..errors import UnpactError

# Min-K%++ divides by the standard deviation of the next-token log-prob; open-unlearning clamps the
# variance at this floor so that a near-deterministic position does not divide by ~0.
MIN_KPP_VARIANCE = 1e-6


def _token_lps(token_lps: ArrayLike, what: str) -> np.ndarray:
    """The per-token log-probs of one text as a non-empty float64 array [T]."""
    lps = np.asarray(token_lps, dtype=np.float64)
    if lps.ndim != 1 or lps.size == 0:
        raise UnpactError(f"{what}: expected a non-empty 1-D array of token log-probs, got shape {lps.shape}")
    return lps


def _same_length(a: Sized, b: Sized, what: str) -> None:
    if len(a) != len(b):
        raise UnpactError(f"{what}: lengths differ ({len(a)} vs {len(b)}); give one entry per item in both")


def _mean_lowest(values: np.ndarray, k: float, what: str) -> float:
    """Mean of the ``max(1, int(T·k))`` smallest values (open-unlearning min_k.py; MUSE omits the max(1, ·))."""
    if not 0 < k <= 1:
        raise UnpactError(f"{what}: k must be in (0, 1], got {k}")
    n = max(1, int(values.size * k))
    return float(np.sort(values)[:n].mean())


def loss_score(token_lps: ArrayLike) -> float:
    """LOSS attack (Yeom et al. 2018): mean token log-prob = −(mean NLL); [T] → scalar.

    open-unlearning LOSSAttack scores the mean NLL; negated here for the higher-is-member sign.
    """
    return float(_token_lps(token_lps, "loss_score").mean())


def zlib_score(token_lps: ArrayLike, text: str) -> float:
    """ZLib attack (Carlini et al. 2021): −(mean NLL) / zlib-compressed length of ``text`` in bytes.

    Dividing by the compressed size discounts texts that are likely merely because they are repetitive.
    Follows open-unlearning ZLIBAttack and MUSE's ``PPL/zlib``: mean token NLL over
    ``len(zlib.compress(text.encode("utf-8")))`` at zlib's default level, negated here.
    ``text`` is the scored text itself (the answer / passage the log-probs belong to).
    """
    return loss_score(token_lps) / len(zlib.compress(text.encode("utf-8")))


def min_k_score(token_lps: ArrayLike, k: float = 0.4) -> float:
    """Min-K% Prob (Shi et al. 2024): mean of the k-fraction lowest token log-probs; [T] → scalar.

    Members have few very unlikely tokens. The count is ``max(1, int(T·k))`` (open-unlearning; MUSE uses
    ``int(T·k)``, empty for short texts); k = 0.4 is MUSE's PrivLeak default. Not negated: open-unlearning's
    −mean is loss-like.
    """
    return _mean_lowest(_token_lps(token_lps, "min_k_score"), k, "min_k_score")


def min_k_plus_plus_stats(log_softmax_rows: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of log p under the model's own next-token distribution: [T, V] → ([T], [T]).

    μ_t = Σ_v p_v log p_v and σ_t = sqrt(Σ_v p_v (log p_v)² − μ_t²), with the variance clamped at
    `MIN_KPP_VARIANCE` (open-unlearning min_k_plus_plus.py). Entries with p_v = 0 (log p = −inf) add 0.
    """
    rows = np.asarray(log_softmax_rows, dtype=np.float64)
    if rows.ndim != 2 or rows.size == 0:
        raise UnpactError(f"min_k_plus_plus_stats: expected non-empty log-softmax rows [T, V], got shape {rows.shape}")
    p = np.exp(rows)
    finite = np.where(np.isfinite(rows), rows, 0.0)
    mu = (p * finite).sum(-1)
    var = (p * finite**2).sum(-1) - mu**2
    return mu, np.sqrt(np.maximum(var, MIN_KPP_VARIANCE))


def min_k_plus_plus_score(token_lps: ArrayLike, mu: ArrayLike, sigma: ArrayLike, k: float = 0.4) -> float:
    """Min-K%++ (Zhang et al. 2024): mean of the k-fraction lowest z_t = (log p(x_t) − μ_t) / σ_t.

    Shapes: ``token_lps``, ``mu``, ``sigma`` all [T] (``mu``, ``sigma`` from `min_k_plus_plus_stats`).
    Standardising by the model's own distribution at each position makes "unlikely" relative to how
    peaked that position is. Same token count as `min_k_score`; not negated (open-unlearning negates).
    """
    lps = _token_lps(token_lps, "min_k_plus_plus_score")
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.shape != lps.shape or sigma.shape != lps.shape:
        raise UnpactError(f"min_k_plus_plus_score: token_lps {lps.shape}, mu {mu.shape} and sigma {sigma.shape} must have the same shape")
    if np.any(sigma <= 0):
        raise UnpactError("min_k_plus_plus_score: sigma must be positive; compute it with min_k_plus_plus_stats")
    return _mean_lowest((lps - mu) / sigma, k, "min_k_plus_plus_score")


def reference_score(token_lps_target: ArrayLike, token_lps_reference: ArrayLike) -> float:
    """Reference attack: mean NLL under the reference model − mean NLL under the target model.

    A member is fitted better by the target than by a reference model that never saw it. open-unlearning
    ReferenceAttack scores target_loss − ref_loss; negated here. (MUSE's ``PPL/ref`` is a ratio instead.)
    """
    return loss_score(token_lps_target) - loss_score(token_lps_reference)


def mia_auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """ROC AUC of members (forget set, label 1) vs non-members (holdout, label 0): [M], [N] → scalar.

    Scores must be higher-is-member (this module's attacks). 1.0: every member outscores every
    non-member; 0.5: indistinguishable. ``sklearn.metrics.roc_auc_score``, as open-unlearning mia/utils.py.
    """
    from sklearn.metrics import roc_auc_score

    members = np.asarray(member_scores, np.float64).ravel()
    nonmembers = np.asarray(nonmember_scores, np.float64).ravel()
    if members.size == 0 or nonmembers.size == 0:
        raise UnpactError(f"mia_auc: need at least one member and one non-member score, got {members.size} and {nonmembers.size}")
    scores = np.concatenate([members, nonmembers])
    if not np.all(np.isfinite(scores)):
        raise UnpactError("mia_auc: scores must be finite (a token log-prob of -inf or NaN reached an attack score)")
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    return float(roc_auc_score(labels, scores))


# The attacks that need only the target model (the reference attack also needs a second model).
# Signatures differ: loss(lps), zlib(lps, text), min_k(lps, k), min_k++(lps, mu, sigma, k).
# Keys are open-unlearning's attack names.
ATTACKS: dict[str, Callable[..., float]] = {
    "loss": loss_score,
    "zlib": zlib_score,
    "min_k": min_k_score,
    "min_k++": min_k_plus_plus_score,
}
