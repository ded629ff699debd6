import numpy as np
import pytest

from unpact.attribution import aggregate, key_tokens, loo_attributions, track
from unpact.attribution.tracking import focus_share, jaccard
from unpact.scoring import Scorer


def test_batched_loo_equals_one_ablation_at_a_time(tiny, tiny_scorer):
    model, tok, fmt = tiny
    questions = ["Where was Marthe Bramley born?", "What is the opposite of hot?"]
    answers = ["Drennick", "cold"]
    batched = loo_attributions(tiny_scorer, questions, answers)
    single = Scorer(model, tok, fmt, batch_size=1)
    for q, a, attr in zip(questions, answers, batched, strict=True):
        enc = fmt.encode(q)
        s, e = enc.span
        full = single.score_ids([enc.ids], [fmt.encode_answer(a)]).mean[0]
        expected = []
        for i in range(s, e):
            ablated = enc.ids[:i] + enc.ids[i + 1:]
            expected.append(full - single.score_ids([ablated], [fmt.encode_answer(a)]).mean[0])
        np.testing.assert_allclose(attr.contributions, expected, atol=1e-5)
        assert len(attr.tokens) == e - s
        assert np.abs(attr.contributions).max() > 1e-3  # ablations really change the score


@pytest.mark.parametrize("contrib, alpha, beta, expected", [
    ([0.5, -0.2, 0.1], 0.1, 3, [0, 2]),             # |P| = 2 < β: every positive token
    ([0.6, 0.3, 0.05, 0.05, -1.0], 0.1, 3, [0, 1]),  # shares 0.6, 0.3, 0.05, 0.05 > 0.1
    ([0.25, 0.25, 0.25, 0.25], 0.3, 2, []),          # no share above α
    ([-0.1, -0.2], 0.1, 3, []),
])
def test_key_tokens_rule(contrib, alpha, beta, expected):
    assert key_tokens(contrib, alpha, beta) == expected


def test_tracking_on_a_hand_built_case():
    before = np.array([2.0, 1.0, 0.0, -0.5])
    after = np.array([0.0, 1.0, 1.0, -0.5])
    t = track(before, after, alpha=0.1, beta=3)
    assert t["key_before"] == [0, 1] and t["key_after"] == [1, 2]
    assert t["jaccard"] == pytest.approx(1 / 3)
    assert t["focus_before"] == pytest.approx(1.0)
    assert t["focus_retention"] == pytest.approx(0.5)  # 1 of the 2 positive units sits on old KeyTokens
    assert t["mass_before"] == pytest.approx(3.5) and t["mass_after"] == pytest.approx(2.5)
    assert -1 <= t["spearman"] <= 1
    assert jaccard([], []) == 1.0 and focus_share(np.array([-1.0]), []) == 0.0
    agg = aggregate([t, {**t, "jaccard": 1.0, "spearman": None}])
    assert agg["jaccard"] == pytest.approx((1 / 3 + 1) / 2)
    assert agg["spearman"] == pytest.approx(t["spearman"])


def test_penalisation_profile_on_a_hand_built_case(tiny):
    from unpact.attribution import keyword_token_mask, penalisation_profile

    _, tok, fmt = tiny
    ids, mask = keyword_token_mask(fmt, "the harp")
    assert ids[-1] == tok.eos_token_id and not mask[-1]  # EOS is never a keyword token
    words = [fmt.token_strings([i])[0].strip() for i in ids[:-1]]
    assert [m for w, m in zip(words, mask[:-1], strict=True) if w == "the"] == [False]
    assert mask[:-1].any()
    before = [np.array([-0.1, -0.2, -0.05]), np.array([-0.3, -0.01])]
    after = [np.array([-2.1, -0.2, -0.55]), np.array([-0.3, -0.01])]
    keyword = [np.array([True, False, False]), np.array([True, False])]
    p = penalisation_profile(before, after, keyword)
    assert p["keyword_delta"] == pytest.approx(-1.0) and p["keyword_penalised"] == pytest.approx(0.5)
    assert p["other_delta"] == pytest.approx(-0.5 / 3) and p["other_penalised"] == pytest.approx(1 / 3)
    assert p["n_tokens"] == 5
    assert penalisation_profile([], [], [])["keyword_delta"] is None
