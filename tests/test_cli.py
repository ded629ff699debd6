import argparse
import json
import re

import numpy as np
import pytest

from unpact.attribution import ABLATIONS, DEFAULT_ALPHA, DEFAULT_BETA, FEATURE_KINDS, loo_attributions
from unpact.attribution import METHODS as ATTRIBUTION_METHODS
from unpact.cli import build_parser, main
from unpact.models import PlainFormat, load_model
from unpact.models.registry import KNOWN
from unpact.recovery import ATTACKS
from unpact.scoring import Scorer
from unpact.study.audit import PROMPT_ATTACKS, WEIGHT_ATTACKS
from unpact.unlearn import METHODS as UNLEARN_METHODS


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, err


def test_unknown_method(capsys, tmp_path):
    code, _, err = run_cli(capsys, "unlearn", "--model", str(tmp_path), "--method", "GradAscent", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "unknown unlearning method 'GradAscent'", "GA_GDR")


def test_model_folder_problems(capsys, tmp_path):
    code, _, err = run_cli(capsys, "attribute", "--model", str(tmp_path / "none"), "--prompt", "Q?", "--answer", "A")
    assert_one_line_error(code, err, "model folder not found", "unpact prepare")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    code, _, err = run_cli(capsys, "attribute", "--model", str(bert), "--prompt", "Q?", "--answer", "A")
    assert_one_line_error(code, err, "BertForMaskedLM is not a causal language model")
    pickle = tmp_path / "pickle"
    pickle.mkdir()
    (pickle / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (pickle / "pytorch_model.bin").write_bytes(b"\x80\x04")
    code, _, err = run_cli(capsys, "attribute", "--model", str(pickle), "--prompt", "Q?", "--answer", "A")
    assert_one_line_error(code, err, "no .safetensors weights", "pytorch_model.bin", "convert them to safetensors")


def test_data_file_with_missing_field_or_empty_answer(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "forget.jsonl").write_text(json.dumps({"id": "f1", "question": "Who?", "answer": ""}) + "\n")
    (data / "retain.jsonl").write_text(json.dumps({"id": "r1", "answer": "x"}) + "\n")
    args = ("unlearn", "--model", str(tmp_path), "--method", "GA_GDR", "--out", str(tmp_path / "o"), "--data", str(data))
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, f"{data / 'forget.jsonl'}:1", "field 'answer' is empty")
    (data / "forget.jsonl").write_text(json.dumps({"id": "f1", "question": "Who?", "answer": "me"}) + "\n")
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, f"{data / 'retain.jsonl'}:1", "missing field 'question'")


def test_methods_lists_every_method_with_defaults_ranges_and_citations(capsys):
    from unpact.unlearn import METHODS

    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    assert len(METHODS) >= 17 and all(f"\n{name} " in "\n" + out for name in METHODS)
    assert "GA_GDR" in out and "NPO_GDR" in out and "beta=0.1" in out
    assert "layer = -1" in out and "int   in [-1, inf)" in out  # RMU's layer: an integer, with its range
    assert out.count("arXiv") >= len(METHODS) - 1  # every method but unpact's own KeyNPO cites its paper
    assert "delta = 0" in out and "gamma = 0.125" in out and "weight γ of the forget term" in out  # SimNPO


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_of_every_subcommand_has_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: registry names are not wrapped apart
    commands = _subcommands(build_parser())
    assert len(commands) >= 10
    undocumented = [f"unpact {name} {'/'.join(a.option_strings) or a.dest}"
                    for name, command in commands.items() for a in command._actions
                    if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert undocumented == []
    helps = {name: command.format_help() for name, command in commands.items()}
    # Lists of valid names come from their registries, so a new method or attack shows up by itself.
    for command, names in [("unlearn", UNLEARN_METHODS), ("attribute", ATTRIBUTION_METHODS),
                           ("attribute", ABLATIONS), ("attribute", FEATURE_KINDS), ("recover", ATTACKS.selectable()),
                           ("audit", PROMPT_ATTACKS + WEIGHT_ATTACKS), ("models", KNOWN)]:
        for name in names:
            assert re.search(rf"[ :]{re.escape(name)}[,)\s]", helps[command]), (command, name)
    assert f"(default {DEFAULT_ALPHA})" in helps["attribute"] and f"(default {DEFAULT_BETA})" in helps["attribute"]


def test_attribute_json_matches_the_library(capsys, study):
    run, _ = study
    q, a = "Where was Marthe Bramley born?", "Drennick"
    code, out, _ = run_cli(capsys, "attribute", "--model", str(run / "model"), "--prompt", q, "--answer", a, "--json")
    assert code == 0
    rows = json.loads(out)
    assert set(rows[0]) == {"token", "contribution", "key"}
    assert "".join(r["token"] for r in rows).strip() == q
    assert any(r["key"] for r in rows)
    model, tok = load_model(run / "model")
    (attr,) = loo_attributions(Scorer(model, tok, PlainFormat(tok)), [q], [a])
    np.testing.assert_allclose([r["contribution"] for r in rows], attr.contributions, atol=1e-6)
    code, out, _ = run_cli(capsys, "attribute", "--model", str(run / "model"), "--prompt", q, "--answer", a)
    assert code == 0 and "KeyTokens" in out and "Bram" in out


@pytest.mark.parametrize("argv", [["attribute", "--model", "m", "--prompt", " ", "--answer", "A"]])
def test_empty_prompt(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "--prompt and --answer must be non-empty")


def test_recover_attacks_a_pair_of_models_like_the_study(capsys, study, tmp_path):
    run, metrics = study
    out = tmp_path / "recover"
    code, stdout, _ = run_cli(capsys, "recover", "--original", str(run / "model"), "--data", str(run / "data"),
                              "--model", f"npo={run / 'methods' / 'NPO_GDR' / 'model'}",
                              "--attacks", "paraphrase", "--out", str(out), "--quiet")
    assert code == 0 and "npo" in stdout
    got = json.loads((out / "metrics.json").read_text())["methods"]["npo"]
    want = metrics["methods"]["NPO_GDR"]
    assert got["forget_efficacy"] == want["forget_efficacy"]
    for attack in ("focus_on_key:instruction", "placebo:instruction", "paraphrase"):
        assert got["recovery_rate"][attack] == want["recovery_rate"][attack]
    assert "relearn" not in got["recovery_rate"]  # only the attacks asked for
    assert (out / "report.html").is_file()
    code, _, err = run_cli(capsys, "recover", "--original", str(run / "model"), "--model", str(run / "model"),
                           "--attacks", "shouting", "--out", str(tmp_path / "x"))
    assert_one_line_error(code, err, "recovery.attacks[0]", "'shouting'")


def test_quiet_silences_the_progress_bars_libraries_draw_too(tmp_path):
    """`--quiet` means no bars, including libraries' own tqdm ones (transformers drew one while it
    converted a model wheel's GGUF on first use)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    script = ("import sys; from unpact.cli import main; code = main(sys.argv[1:]); from tqdm.auto import tqdm; "
              "list(tqdm(range(3), desc='Converting GGUF')); sys.exit(code)")
    args = [sys.executable, "-c", script, "run", str(tmp_path / "missing.yaml"), "--quiet"]
    err = subprocess.run(args, capture_output=True, text=True, env=env).stderr
    assert "missing.yaml" in err and "Converting GGUF" not in err  # the error is said, no bar drawn
