"""Published benchmark layouts through the whole study on the built-in model: a MUSE-News folder and
an MMLU CSV folder (real rows from tests/fixtures, see SOURCES.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from unpact.config import GridConfig, from_dict, validate_grid
from unpact.study import Grid

FIX = Path(__file__).parent / "fixtures"


def muse_folder(root: Path) -> Path:
    """MUSE's layout; its retain_qa (absent from the fixture) is the first half of the real forget_qa rows."""
    folder = root / "muse"
    shutil.copytree(FIX / "muse_news", folder)
    qa = json.loads((FIX / "muse_news" / "knowmem" / "forget_qa.json").read_text(encoding="utf-8"))
    (folder / "knowmem" / "forget_qa.json").write_text(json.dumps(qa[50:]), encoding="utf-8")
    (folder / "knowmem" / "retain_qa.json").write_text(json.dumps(qa[:50]), encoding="utf-8")
    return folder


def test_muse_and_mmlu_folders_run_through_the_study(tmp_path):
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2, "max_epochs": 12,
            "lr": 0.004, "target_accuracy": 0.01, "seed": 0}
    cfg = validate_grid(from_dict(GridConfig, {
        "name": "published", "keep_models": False,
        "models": [{"name": "tiny", "builtin": tiny}],
        "benchmarks": [
            {"name": "muse-news", "format": "muse", "path": str(muse_folder(tmp_path))},
            # forget: the 100 test questions; retain: the 5 dev ones (lettered choices, answer = letter)
            {"name": "mmlu-algebra", "format": "mmlu", "path": str(FIX / "mmlu")},
        ],
        "methods": [{"method": "GA_GDR", "lr": 0.001, "epochs": 1, "hparams": {"alpha": 1.0}}],
        # few-shot needs demonstrations about other entities; MMLU's are all one subject
        "recovery": {"attacks": ["sampling", "paraphrase", "quantize"], "sampling_n": 2, "quantize_bits": [8]},
    }))
    metrics = Grid(cfg, tmp_path / "run").run()
    groups = {g["benchmark"]: g for g in metrics["groups"]}
    assert set(groups) == {"muse-news", "mmlu-algebra"}
    for name, n_forget in (("muse-news", 50), ("mmlu-algebra", 100)):
        m = groups[name]["methods"]["GA_GDR"]
        assert m["destructive_rate"] <= 1 and set(m["recovery_rate"]) >= {"sampling", "paraphrase", "quantize_int8"}
        data = tmp_path / "run" / "groups" / f"tiny__{name}" / "data" / "forget.jsonl"
        assert len(data.read_text(encoding="utf-8").splitlines()) == n_forget
    rows = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    mmlu = [r for r in rows if r["benchmark"] == "mmlu-algebra" and r["split"] == "forget"]
    assert len(mmlu) == 100 and all(r["gold"] in "ABCD" and "\nA. " in r["question"] for r in mmlu)
    # the attribution covers the whole question, lettered choices included
    assert all(len(r["tokens"]) == len(r["contrib_before"]) > 10 for r in mmlu)
    assert (tmp_path / "run" / "report.html").is_file()
    # a split the benchmark lacks (utility) is a null accuracy, never NaN (invalid JSON)
    assert "NaN" not in (tmp_path / "run" / "metrics.json").read_text(encoding="utf-8")
    assert groups["muse-news"]["methods"]["GA_GDR"]["accuracy"]["utility"] is None
    # MUSE's own numbers for the original, the gold and the unlearned model; none for MMLU
    muse = groups["muse-news"]
    for standard in (muse["base"]["standard"], muse["gold"]["standard"], muse["methods"]["GA_GDR"]["standard"]):
        m = standard["muse"]
        assert all(0 <= m[key] <= 1 for key in ("knowmem_forget", "knowmem_retain", "verbmem_forget"))
        assert m["utility_preserved"] is None or m["utility_preserved"] >= 0
    assert muse["base"]["standard"]["muse"]["utility_preserved"] in (1.0, None)  # None: nothing retained to keep
    assert set(groups["mmlu-algebra"]["base"]["standard"]["muse"]) == {"privleak_min_k"}
    base = json.loads((tmp_path / "run" / "groups" / "tiny__muse-news" / "base.json").read_text(encoding="utf-8"))
    # the built-in model's context, sized to MUSE's questions (256 tokens): every VerbMem prompt cut,
    # the generation budget half the context
    context = json.loads((tmp_path / "run" / "groups" / "tiny__muse-news" / "model" / "config.json").read_text())
    assert context["max_position_embeddings"] == 256
    assert base["muse"]["verbmem"]["max_new_tokens"] == 128 and base["muse"]["verbmem"]["prompts_cut"] == 100
    assert len(base["muse"]["knowmem"]["forget"]) == 50 and len(base["muse"]["knowmem"]["retain"]) == 50
