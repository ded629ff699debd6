"""TOFU, MUSE and MIA metrics on small fixed inputs, against hand-computed numbers and scipy/sklearn."""

import math
import zlib

import numpy as np
import pytest
from scipy.stats import hmean, ks_2samp
from sklearn.metrics import roc_auc_score

from unpact.errors import UnpactError
from unpact.evaluation.mia import (
    ATTACKS,
    loss_score,
    mia_auc,
    min_k_plus_plus_score,
    min_k_plus_plus_stats,
    min_k_score,
    reference_score,
    zlib_score,
)
from unpact.evaluation.muse_metrics import knowmem, privleak, rouge_l_f1, utility_preserved, verbmem
from unpact.evaluation.tofu_metrics import (
    forget_quality,
    model_utility,
    normalised_probability,
    tofu_probability,
    tofu_rouge_l,
    truth_ratio,
    truth_ratio_closer_to_1,
    truth_ratio_true_better,
)

# ---------------------------------------------------------------- TOFU


def test_normalised_probability_is_geometric_mean_of_token_probs():
    got = normalised_probability([-1.0, -6.0], [2, 3])
    assert got == pytest.approx([math.exp(-0.5), math.exp(-2.0)])


def test_tofu_probability_forget_retain_form():
    # answer means: -1 and -2 → mean(e^-1, e^-2)
    got = tofu_probability([np.array([-0.5, -1.5]), np.array([-2.0])])
    assert got == pytest.approx((math.exp(-1) + math.exp(-2)) / 2)
    assert got == pytest.approx(0.2516074, abs=1e-7)


def test_tofu_probability_with_perturbed_answers():
    true = [np.array([-1.0]), np.array([-0.5, -0.5])]
    perturbed = [[np.array([-2.0]), np.array([-1.0, -3.0])],  # normalised probs e^-2, e^-2
                 [np.array([-0.5])]]                           # equal to the true answer → 1/2
    want0 = math.exp(-1) / (math.exp(-1) + 2 * math.exp(-2))
    assert tofu_probability(true, perturbed) == pytest.approx((want0 + 0.5) / 2)
    # stable where the probabilities underflow: e^-2000 vs e^-2001
    assert tofu_probability([np.array([-2000.0])], [[np.array([-2001.0])]]) == pytest.approx(1 / (1 + math.exp(-1)))


def test_truth_ratio_averages_log_probs_across_perturbed_answers():
    para = [np.array([-1.0, -1.0])]
    pert = [[np.array([-1.0]), np.array([-3.0, -3.0])]]  # mean log-probs -1 and -3 → geometric mean e^-2
    r = truth_ratio(para, pert)
    assert r.shape == (1,)
    assert r[0] == pytest.approx(math.exp(-1))                   # e^-2 / e^-1
    assert r[0] != pytest.approx((1 + math.exp(-2)) / 2)         # the arithmetic-mean variant


def test_truth_ratio_aggregates():
    ratios = np.array([0.5, 2.0, 1.0])
    assert truth_ratio_closer_to_1(ratios) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert truth_ratio_true_better(ratios) == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_forget_quality_is_the_ks_p_value():
    unlearned = np.array([0.2, 0.5, 0.9, 1.3, 0.7, 0.4])
    retrained = np.array([0.8, 1.1, 0.95, 1.4, 1.2, 0.6, 1.05])
    want = ks_2samp(unlearned, retrained).pvalue
    assert forget_quality(unlearned, retrained) == pytest.approx(want)
    assert want < 0.5  # a real difference, not a degenerate 1.0
    # TOFU's own script tests 1/R: same p-value
    assert forget_quality(unlearned, retrained) == pytest.approx(ks_2samp(1 / unlearned, 1 / retrained).pvalue)
    assert forget_quality(unlearned, unlearned.copy()) == 1.0


def test_model_utility_harmonic_mean():
    assert model_utility({"a": 1.0, "b": 0.5, "c": 0.25}) == pytest.approx(3 / 7)
    nine = {f"m{i}": v for i, v in enumerate([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.95])}
    assert model_utility(nine) == pytest.approx(hmean(list(nine.values())))
    assert model_utility({"a": 0.9, "b": 0.0, "c": 0.5}) == 0.0


# ---------------------------------------------------------------- MUSE


def test_rouge_l_f1_is_f_measure_without_stemming():
    # LCS 3: precision 3/3, recall 3/6 → F1 2/3
    assert rouge_l_f1("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert rouge_l_f1("cats running", "cat run") == 0.0  # MUSE does not stem


def test_verbmem_and_knowmem_mean_f1_as_fractions():
    assert verbmem(["the cat sat", "a b"], ["the cat sat on the mat", "a b"]) == pytest.approx((2 / 3 + 1) / 2)
    # F1, not recall: recall would be 1.0
    assert knowmem(["Paris, France", "no idea"], ["Paris", "Paris"]) == pytest.approx((2 / 3 + 0) / 2)


def test_privleak_muse_sign_and_scale():
    assert privleak(0.7, 0.7) == 0.0
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)   # forget set fully exposed: under-unlearning
    assert privleak(0.25, 0.5) == pytest.approx(50.0)    # MUSE AUCs 0.75 vs 0.5: over-unlearning
    # MUSE's own formula on its holdout-as-member AUCs (1 - ours)
    a_u, a_r = 0.62, 0.45
    assert privleak(a_u, a_r) == pytest.approx(((1 - a_u) - (1 - a_r)) / (1 - a_r) * 100)


def test_utility_preserved_is_ratio():
    assert utility_preserved(0.3, 0.6) == pytest.approx(0.5)


# ---------------------------------------------------------------- MIA


def test_loss_and_reference_scores():
    assert loss_score([-1.0, -2.0, -3.0]) == pytest.approx(-2.0)
    # target NLL 1, reference NLL 3 → the target fits it better by 2 (member-like)
    assert reference_score([-1.0, -1.0], [-3.0]) == pytest.approx(2.0)


def test_zlib_score_divides_by_compressed_utf8_length():
    lps = [-1.0, -3.0]
    text = "héllo " * 40
    n = len(zlib.compress(text.encode("utf-8")))
    assert n < len(text) // 4  # the repetition really compresses
    assert zlib_score(lps, text) == pytest.approx(-2.0 / n)


def test_min_k_picks_the_lowest_tokens():
    lps = [-0.1, -5.0, -0.2, -3.0, -0.3]
    assert min_k_score(lps, k=0.4) == pytest.approx(-4.0)   # 2 of 5: -5 and -3
    assert min_k_score(lps, k=0.1) == pytest.approx(-5.0)   # int(0.5) = 0 → at least one token
    assert min_k_score(lps, k=1.0) == pytest.approx(np.mean(lps))


def test_min_k_plus_plus_stats_by_hand():
    with np.errstate(divide="ignore"):  # log 0 = -inf, as a log-softmax row gives for p = 0
        rows = np.log(np.array([[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25]]))
    mu, sigma = min_k_plus_plus_stats(rows)
    ln2 = math.log(2)
    # row 0: log p is -ln2 w.p. 1/2 and -2ln2 w.p. 1/2 → mean -1.5 ln2, sd ln2/2 (the p=0 entry adds nothing)
    assert mu[0] == pytest.approx(-1.5 * ln2)
    assert sigma[0] == pytest.approx(ln2 / 2)
    # row 1: uniform → variance 0, clamped at 1e-6 → sd 1e-3
    assert mu[1] == pytest.approx(-2 * ln2)
    assert sigma[1] == pytest.approx(1e-3)


def test_min_k_plus_plus_score_standardises_then_takes_lowest():
    lps = np.array([-0.5, -2.0, -1.0, -0.2])
    mu = np.array([-1.0, -1.0, -1.5, -0.1])
    sigma = np.array([0.5, 2.0, 0.25, 0.1])
    # z = [1.0, -0.5, 2.0, -1.0]; k=0.5 → two lowest: -1.0, -0.5
    assert min_k_plus_plus_score(lps, mu, sigma, k=0.5) == pytest.approx(-0.75)


def _pair_count_auc(members, nonmembers):
    """Mann–Whitney: share of (member, non-member) pairs where the member scores higher, ties half."""
    wins = sum(1.0 if m > n else 0.5 if m == n else 0.0 for m in members for n in nonmembers)
    return wins / (len(members) * len(nonmembers))


def test_mia_auc_matches_sklearn_and_pair_count():
    members, nonmembers = [0.9, 0.4, 0.7, 0.5], [0.5, 0.1, 0.6]
    got = mia_auc(members, nonmembers)
    # pairs won: 0.9→3, 0.4→1, 0.7→3, 0.5→1 + tie 0.5 → 8.5 of 12
    assert got == pytest.approx(8.5 / 12)
    assert got == pytest.approx(_pair_count_auc(members, nonmembers))
    assert got == pytest.approx(roc_auc_score([1] * 4 + [0] * 3, members + nonmembers))
    # open-unlearning's form: loss-like scores (negated), forget labelled 0, holdout 1
    assert got == pytest.approx(roc_auc_score([0] * 4 + [1] * 3, [-s for s in members + nonmembers]))


def test_attacks_registry():
    assert set(ATTACKS) == {"loss", "zlib", "min_k", "min_k++"}
    assert ATTACKS["min_k"]([-1.0, -9.0], k=0.5) == pytest.approx(-9.0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("call, match", [
    (lambda: tofu_probability([]), "no answers"),
    (lambda: tofu_probability([np.array([])]), "non-empty 1-D"),
    (lambda: tofu_probability([[-1.0]], [[[-1.0]], [[-2.0]]]), "lengths differ"),
    (lambda: truth_ratio([[-1.0], [-2.0]], [[[-1.0]]]), "lengths differ"),
    (lambda: truth_ratio([[-1.0]], [[]]), "no answers"),
    (lambda: normalised_probability([-1.0], [0]), "at least one token"),
    (lambda: normalised_probability([-1.0, -2.0], [1]), "differ in shape"),
    (lambda: truth_ratio_closer_to_1([]), "positive truth ratios"),
    (lambda: forget_quality([0.5], [0.0]), "positive truth ratios"),
    (lambda: model_utility({}), "no values"),
    (lambda: model_utility({"retain_prob": -0.1}), "'retain_prob'"),
    (lambda: verbmem(["a"], ["a", "b"]), "lengths differ"),
    (lambda: knowmem([], []), "no texts"),
    (lambda: privleak(1.2, 0.5), r"AUC in \[0, 1\]"),
    (lambda: privleak(0.5, 1.0), "divides by zero"),
    (lambda: utility_preserved(0.3, 0.0), "must be > 0"),
    (lambda: loss_score([]), "non-empty 1-D"),
    (lambda: min_k_score([-1.0, -2.0], k=0), r"k must be in \(0, 1\]"),
    (lambda: min_k_score([-1.0, -2.0], k=1.5), r"k must be in \(0, 1\]"),
    (lambda: min_k_plus_plus_score([-1.0, -2.0], [0.0], [1.0, 1.0]), "same shape"),
    (lambda: min_k_plus_plus_score([-1.0], [0.0], [0.0]), "sigma must be positive"),
    (lambda: min_k_plus_plus_stats(np.zeros(3)), r"\[T, V\]"),
    (lambda: mia_auc([], [0.1]), "at least one member"),
    (lambda: mia_auc([np.nan], [0.1]), "finite"),
])
def test_errors_are_one_line_unpact_errors(call, match):
    with pytest.raises(UnpactError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_tofu_rouge_compares_porter_stems_as_tofu_does():
    from nltk.stem import porter

    stem = porter.PorterStemmer().stem
    pred, gold = "The cats were running home", "the cat runs home"
    # independent: LCS of the lower-cased, Porter-stemmed words over the gold length (ROUGE-L recall)
    words = lambda t: [stem(w) for w in t.lower().split()]  # noqa: E731
    expected = _lcs(words(pred), words(gold)) / len(words(gold))
    assert expected == 1.0 and tofu_rouge_l([pred], [gold]) == pytest.approx(expected)
    # unstemmed, only "the" and "home" match: the correctness rule and MUSE keep words as written
    from unpact.evaluation import rouge_l_recall

    assert rouge_l_recall(pred, gold) == pytest.approx(0.5)
    assert tofu_rouge_l([pred, "nothing"], [gold, "else"]) == pytest.approx(0.5)
    with pytest.raises(UnpactError, match="lengths differ"):
        tofu_rouge_l([pred], [])


def test_muse_knowmem_prompt_shots_and_answer_cut():
    from unpact.data import Item
    from unpact.data.benchmarks.muse import knowmem_answer, knowmem_prompt, knowmem_shots

    icl = [Item("muse-forget_qa_icl-0001", "Q1?", "A1", "icl"), Item("muse-retain_qa_icl-0001", "Q2?", "A2", "icl")]
    assert [s.id for s in knowmem_shots(icl, "forget")] == ["muse-forget_qa_icl-0001"]
    assert [s.id for s in knowmem_shots(icl[:1], "retain")] == ["muse-forget_qa_icl-0001"]  # fallback: all
    assert knowmem_prompt(icl[:1], "Who?") == "Question: Q1?\nAnswer: A1\n\nQuestion: Who?\nAnswer: "
    assert knowmem_answer(" Ada Lovelace\n\nQuestion: next") == "Ada Lovelace"
    assert knowmem_answer("Ada Question: more") == "Ada"


def test_muse_raw_fits_the_context_and_cuts_references_to_the_budget(tiny):
    from unpact.data import Item
    from unpact.data.benchmarks.muse import knowmem_prompt
    from unpact.scoring import Scorer
    from unpact.study.standard import muse_raw

    model, tok, fmt = tiny
    scorer = Scorer(model, tok, fmt, batch_size=4)
    n_ctx = model.config.max_position_embeddings
    words = "Orsa Velin was born in Quillmoor and studied botany there " * 40
    icl = [Item(f"muse-forget_qa_icl-{i:04d}", f"Where was person {i} born?", "Quillmoor", "icl") for i in range(1, 6)]
    splits = {"forget": [Item("f1", "Where was Orsa Velin born?", "Quillmoor", "forget")], "retain": []}
    out = muse_raw(scorer, splits, icl, [(words, words)])
    used = out["knowmem_shots"]["forget"]
    assert 0 <= used < 5  # five demonstrations do not fit 128 positions with a 32-token budget
    prompt = fmt.encode_text(knowmem_prompt(icl[5 - used:], splits["forget"][0].question))
    assert len(prompt) + 32 <= n_ctx
    v = out["verbmem"]
    assert v["max_new_tokens"] == n_ctx // 2 and v["prompts_cut"] == 1
    # the reference is the true continuation's first max_new_tokens tokens
    assert len(fmt.encode_text(v["references"][0])) - len(fmt.text_bos) == pytest.approx(n_ctx // 2, abs=1)
    assert out["knowmem"]["retain"] == []
