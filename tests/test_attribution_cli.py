"""`unpact attribute` with --method/--ablation/--features/--steps/--compare, on the tiny model saved to disk."""

import json

import numpy as np
import pytest

from unpact.attribution import gradient_attributions, loo_attributions, track
from unpact.cli import main

Q, A = "Where was Marthe Bramley born?", "Drennick"


@pytest.fixture(scope="module")
def tiny_dir(tiny, tmp_path_factory):
    model, tok, _ = tiny
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_default_json_is_unchanged(capsys, tiny_dir, tiny_scorer):
    code, out, _ = run_cli(capsys, "attribute", "--model", str(tiny_dir), "--prompt", Q, "--answer", A, "--json")
    assert code == 0
    rows = json.loads(out)
    assert set(rows[0]) == {"token", "contribution", "key"}
    (attr,) = loo_attributions(tiny_scorer, [Q], [A])
    np.testing.assert_allclose([r["contribution"] for r in rows], attr.contributions, atol=1e-5)


def test_words_replace_and_ig_json(capsys, tiny_dir, tiny_scorer):
    code, out, _ = run_cli(capsys, "attribute", "--model", str(tiny_dir), "--prompt", Q, "--answer", A, "--json",
                           "--ablation", "replace", "--features", "words")
    assert code == 0
    d = json.loads(out)
    assert d["method"] == "loo_replace" and [r["token"] for r in d["rows"]][2] == " Marthe"
    (attr,) = loo_attributions(tiny_scorer, [Q], [A], ablation="replace", features="words")
    np.testing.assert_allclose(d["contributions"], attr.contributions, atol=1e-5)
    code, out, _ = run_cli(capsys, "attribute", "--model", str(tiny_dir), "--prompt", Q, "--answer", A, "--json",
                           "--method", "integrated_gradients", "--steps", "8", "--baseline-id", "50")
    d = json.loads(out)
    (ig,) = gradient_attributions(tiny_scorer, [Q], [A], steps=8, baseline_id=50)
    np.testing.assert_allclose(d["contributions"], ig.contributions, atol=1e-5)
    assert d["completeness_gap"] == pytest.approx(ig.completeness_gap, abs=1e-5) and "relative_gap" in d


def test_compare_prints_both_heatmaps_and_tracking(capsys, tiny_dir, tiny, tmp_path):
    import torch

    model, tok, _ = tiny
    other = tmp_path / "other"
    with torch.no_grad():  # a visibly different second model: perturb one weight, save, restore
        w = model.model.layers[0].mlp.down_proj.weight
        saved = w.clone()
        w.add_(torch.randn_like(w) * 0.5, alpha=1.0)
        model.save_pretrained(other, safe_serialization=True)
        w.copy_(saved)
    tok.save_pretrained(other)
    code, out, _ = run_cli(capsys, "attribute", "--model", str(tiny_dir), "--prompt", Q, "--answer", A,
                           "--compare", str(other), "--ablation", "mask", "--json")
    assert code == 0
    d = json.loads(out)
    assert set(d) == {"before", "after", "tracking"}
    expected = track(np.array(d["before"]["contributions"]), np.array(d["after"]["contributions"]))
    assert d["tracking"]["jaccard"] == pytest.approx(expected["jaccard"])
    assert d["before"]["contributions"] != d["after"]["contributions"]
    code, out, _ = run_cli(capsys, "attribute", "--model", str(tiny_dir), "--prompt", Q, "--answer", A,
                           "--compare", str(other), "--method", "saliency")
    assert code == 0 and out.count("KeyTokens") == 2 and "tracking" in out and "jaccard=" in out


@pytest.mark.parametrize("flag, value", [("--method", "shap"), ("--ablation", "drop"), ("--features", "chars"),
                                         ("--steps", "0")])
def test_bad_options_are_one_line_errors(capsys, flag, value):
    code, _, err = run_cli(capsys, "attribute", "--model", "nowhere", "--prompt", Q, "--answer", A, flag, value)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and flag in err
