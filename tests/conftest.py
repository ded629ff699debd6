"""Shared fixtures: a tiny random model (instant) and one full study run on the built-in benchmark
(the expensive part, done once per test session)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported

import pytest  # noqa: E402
import torch

from unpact.config import StudyConfig
from unpact.data import SPLITS, builtin
from unpact.models import PlainFormat
from unpact.models.builtin import BuiltinModelConfig, build_model, train_tokenizer
from unpact.scoring import Scorer
from unpact.study import Study


@pytest.fixture(scope="session")
def benchmark():
    return builtin.generate(seed=0)


@pytest.fixture(scope="session")
def tiny(benchmark):
    """(model, tokenizer, fmt) — an untrained 2-layer model; enough for exact-arithmetic tests."""
    texts = [f"Question: {it.question}\nAnswer: {it.answer}" for s in SPLITS for it in benchmark[s]]
    tok = train_tokenizer(texts, vocab_size=400)
    cfg = BuiltinModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=1)
    model = build_model(cfg, tok).eval()
    with torch.no_grad():  # random init gives near-uniform log-probs; sharpen so differences matter
        model.lm_head.weight.mul_(20)
    return model, tok, PlainFormat(tok)


@pytest.fixture(scope="session")
def tiny_scorer(tiny):
    model, tok, fmt = tiny
    return Scorer(model, tok, fmt, batch_size=7)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A private cache of converted real models (never the user's), shared by the session's modules:
    converting SmolLM2 from its GGUF costs about 15 s."""
    return tmp_path_factory.mktemp("unpact-cache")


@pytest.fixture(scope="module")
def cache(model_cache):
    """``$UNPACT_CACHE`` pointed at the session's private model cache while a module's tests run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNPACT_CACHE", str(model_cache))
        yield model_cache


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """The demo study with default settings, run once: (run dir, metrics)."""
    out = tmp_path_factory.mktemp("study")
    metrics = Study(StudyConfig(), out).run()
    from unpact.report import print_summary

    print_summary(metrics)  # shown with pytest -s: the numbers the assertions below judge
    return out, metrics
