"""Unlearning from raw text (MUSE raw/, WMDP corpora): windows that tile each document, every method
training on them, and a study that unlearns a MUSE folder's raw forget corpus."""

from __future__ import annotations

import json
import math

import pytest
import torch

from test_study_benchmarks import FIX, muse_folder
from unpact.config import GridConfig, from_dict, validate_grid
from unpact.data.chunks import TextChunk, chunk_texts
from unpact.errors import UnpactError
from unpact.scoring import pack
from unpact.study import Grid
from unpact.unlearn import METHODS, UnlearnConfig, unlearn
from unpact.unlearn.methods.base import nll

DOC = ("Orsa Velin was born in Quillmoor in the year of the long winter. She studied botany in Harrowgate, "
       "where she catalogued the mosses of the northern cliffs and wrote three books about them.")


def test_windows_tile_every_token_after_the_context_exactly_once(tiny):
    _, _, fmt = tiny
    ids = fmt.encode_text(DOC)
    chunks = chunk_texts(fmt.encode_text, [DOC, DOC[:40]], "forget", chunk_tokens=12, context_tokens=4)
    first = [c for c in chunks if c.id.startswith("forget-0001-")]
    assert [c.id for c in first[:2]] == ["forget-0001-0001", "forget-0001-0002"]
    assert all(len(c.prompt_ids) == 4 and 1 <= len(c.target_ids) <= 8 for c in first)
    assert [t for c in first for t in c.target_ids] == ids[4:]  # contiguous, no gap, no repeat
    for a, b in zip(first, first[1:], strict=False):  # each window's context is the text right before its targets
        assert list(b.prompt_ids) == list(a.prompt_ids + a.target_ids)[-4:]
    assert any(c.id.startswith("forget-0002-") for c in chunks)


def test_windows_refuse_texts_too_short_and_bad_sizes(tiny):
    _, _, fmt = tiny
    with pytest.raises(UnpactError, match="no text longer than context_tokens = 64"):
        chunk_texts(fmt.encode_text, ["short"], "retain1", chunk_tokens=128, context_tokens=64)
    with pytest.raises(UnpactError, match="context_tokens"):
        chunk_texts(fmt.encode_text, [DOC], "forget", chunk_tokens=8, context_tokens=8)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_unlearns_raw_text(tiny, name):
    model, tok, fmt = tiny
    model = type(model)(model.config)
    model.load_state_dict(tiny[0].state_dict())
    forget = chunk_texts(fmt.encode_text, [DOC], "forget", chunk_tokens=16, context_tokens=4)
    retain = chunk_texts(fmt.encode_text, [DOC[::-1]], "retain", chunk_tokens=16, context_tokens=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = UnlearnConfig(method=name, epochs=2, lr=1e-3, batch_size=2, retain_batch_size=2)
    model, logs = unlearn(model, tok, fmt, forget, retain, cfg)
    assert logs["steps"] == 2 * math.ceil(len(forget) / 2) and math.isfinite(logs["final_loss"])
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_gradient_ascent_on_windows_raises_the_forget_text_loss(tiny):
    model, tok, fmt = tiny
    model = type(model)(model.config)
    model.load_state_dict(tiny[0].state_dict())
    forget = chunk_texts(fmt.encode_text, [DOC], "forget", chunk_tokens=16, context_tokens=4)
    retain = chunk_texts(fmt.encode_text, [DOC[::-1]], "retain", chunk_tokens=16, context_tokens=4)
    batch = pack([c.prompt_ids for c in forget], [c.target_ids for c in forget], tok.pad_token_id)
    with torch.no_grad():
        loss_before = nll(model, batch).item()
    model, _ = unlearn(model, tok, fmt, forget, retain, UnlearnConfig(method="GA", epochs=5, lr=1e-2, batch_size=4))
    with torch.no_grad():
        assert nll(model, batch).item() > loss_before + 0.5


def raw_muse_folder(root):
    """The MUSE fixture with raw/forget (the forget passages of verbmem) and raw/retain1 (the others)."""
    folder = muse_folder(root)
    rows = json.loads((FIX / "muse_news" / "verbmem" / "forget.json").read_text(encoding="utf-8"))
    (folder / "raw").mkdir()
    (folder / "raw" / "forget.json").write_text(json.dumps([r["prompt"] + r["gt"] for r in rows[:3]]), encoding="utf-8")
    (folder / "raw" / "retain1.json").write_text(json.dumps([r["prompt"] + r["gt"] for r in rows[3:6]]),
                                                 encoding="utf-8")
    return folder


def _grid(tmp_path, raw_text: dict, methods: list[str]):
    tiny = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2, "max_epochs": 12,
            "lr": 0.004, "target_accuracy": 0.01, "seed": 0}
    return validate_grid(from_dict(GridConfig, {
        "name": "raw", "keep_models": False, "evaluation": {"gold_model": False},
        "models": [{"name": "tiny", "builtin": tiny}],
        "benchmarks": [{"name": "muse", "format": "muse", "path": str(raw_muse_folder(tmp_path)), "raw_text": raw_text}],
        "methods": [{"method": m, "lr": 1e-3, "epochs": 1, "batch_size": 8, "retain_batch_size": 8} for m in methods],
        "recovery": {"attacks": ["paraphrase"]},
    }))


def test_a_study_unlearns_the_raw_forget_corpus(tmp_path):
    cfg = _grid(tmp_path, {"chunk_tokens": 64, "context_tokens": 16}, ["GA_GDR", "KeyNPO"])
    run = tmp_path / "run"
    metrics = Grid(cfg, run).run()
    bench = Grid(cfg, run)._benchmark(cfg.benchmarks[0])
    from unpact.models import load_model, prompt_format

    _, tok = load_model(run / "groups" / "tiny__muse" / "model")
    n = len(chunk_texts(prompt_format(tok).encode_text, bench.raw["forget"], "forget", 64, 16))
    for method in ("GA_GDR", "KeyNPO"):
        result = json.loads((run / "cells" / f"tiny__muse__{method}__s0" / "result.json").read_text(encoding="utf-8"))
        assert result["train"]["steps"] == math.ceil(n / 8) and n > 8  # windows, not the 50 forget questions
        assert metrics["groups"][0]["methods"][method]["n_known"] >= 0
    # another window size is another training set: the cells are recomputed
    cfg2 = _grid(tmp_path / "b", {"chunk_tokens": 48, "context_tokens": 16}, ["GA_GDR"])
    study = Grid(cfg2, run)
    assert [done for _, done in study.status()] == [False]


def test_a_missing_raw_corpus_names_what_the_folder_has(tmp_path):
    cfg = _grid(tmp_path, {"retain": "retain2"}, ["GA_GDR"])
    with pytest.raises(UnpactError, match="no raw corpus 'retain2' \\(it has: forget, retain1\\)"):
        Grid(cfg, tmp_path / "run").run()


def test_raw_text_config_is_validated():
    base = {"name": "m", "format": "muse", "path": "x"}
    for bad, match in (({"context_tokens": 0}, "context_tokens"), ({"chunk_tokens": 8, "context_tokens": 8}, "chunk_tokens")):
        with pytest.raises(UnpactError, match=match):
            validate_grid(from_dict(GridConfig, {"benchmarks": [{**base, "raw_text": bad}]}))
    with pytest.raises(UnpactError, match="built-in benchmark has no raw corpora"):
        validate_grid(from_dict(GridConfig, {"benchmarks": [{"name": "b", "builtin": {}, "raw_text": {}}]}))
    assert isinstance(TextChunk("a", (1,), (2,)), TextChunk)
