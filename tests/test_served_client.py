"""The completions client against a scripted stand-in server (stdlib http.server in a thread):
retries with backoff, one-line errors for what the user can fix, and the API key kept out of sight.
The real server (llama.cpp) is exercised in test_served.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from unpact.errors import UnpactError
from unpact.models.client import CompletionsClient, is_served, public_url
from unpact.models.prompt import PlainFormat
from unpact.models.served import ServedScorer, ServedTokenizer

SECRET = "sk-test-0123456789abcdef"


class Script:
    """What the stand-in answers: a list of (status, body) consumed per POST; GET /models always works."""

    def __init__(self):
        self.replies: list[tuple[int, object]] = []
        self.seen: list[dict] = []
        self.auth: list[str | None] = []


@pytest.fixture
def server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            script.auth.append(self.headers.get("Authorization"))
            self._send(200, {"data": [{"id": "stand-in"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.seen.append(body)
            script.auth.append(self.headers.get("Authorization"))
            status, reply = script.replies.pop(0) if script.replies else (200, _echo(body["prompt"]))
            self._send(status, reply)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    httpd.shutdown()


def _echo(prompt: str) -> dict:
    """A llama.cpp-shaped echo answer: one token per character, log-prob −(position + 1)/10, null first;
    a leading "^" (the stand-in's BOS) is left out of the tokens and offsets, as llama.cpp leaves BOS out."""
    tokens = list(prompt.removeprefix("^")) + ["!"]
    return {"choices": [{"text": prompt + "!", "logprobs": {
        "tokens": tokens, "text_offset": list(range(len(tokens))),
        "token_logprobs": [None] + [-(i + 1) / 10 for i in range(1, len(tokens))]}}]}


def test_urls_are_recognised_and_shown_without_credentials():
    assert is_served("http://127.0.0.1:8080/v1") and is_served("https://api.example.com/v1")
    assert not is_served("smollm2-135m") and not is_served("runs/model")
    assert public_url("https://user:pw@host.example:8443/v1/") == "https://host.example:8443/v1"


def test_retries_5xx_with_backoff_then_succeeds(server):
    url, script = server
    script.replies = [(503, {"error": "busy"}), (502, "bad gateway"), (200, {"choices": [{"text": "ok"}]})]
    client = CompletionsClient(url, retries=3, backoff=0.0)
    assert client.complete("hi", max_tokens=1)["text"] == "ok"
    assert client.requests == 4  # GET /models + three POSTs


def test_gives_up_after_the_retries_with_one_line(server):
    url, script = server
    script.replies = [(500, {"error": "boom"})] * 3
    client = CompletionsClient(url, retries=2, backoff=0.0)
    with pytest.raises(UnpactError, match=r"no answer after 3 attempts \(HTTP 500\).*--retries"):
        client.complete("hi")


def test_a_rejected_key_names_the_variable_never_the_key(server, monkeypatch):
    url, script = server
    monkeypatch.setenv("MY_KEY", SECRET)
    client = CompletionsClient(url, key_env="MY_KEY")
    script.replies = [(401, {"error": {"message": f"invalid key {SECRET}"}})]
    with pytest.raises(UnpactError) as err:
        client.complete("hi")
    assert "MY_KEY" in str(err.value) and SECRET not in str(err.value) and SECRET not in repr(client)
    assert script.auth[-1] == f"Bearer {SECRET}"  # sent to the server, and only there


def test_not_found_and_refused_requests_say_what_to_do(server):
    url, script = server
    client = CompletionsClient(url)
    script.replies = [(404, "no such route")]
    with pytest.raises(UnpactError, match="not found.*ending in /v1"):
        client.complete("hi")
    script.replies = [(400, {"error": {"message": "Requested tokens exceed context window"}})]
    with pytest.raises(UnpactError, match="HTTP 400: Requested tokens exceed context window"):
        client.complete("hi")
    scorer = ServedScorer(client, PlainFormat(ServedTokenizer(client)))
    script.replies = [(200, {"choices": [{"text": "x"}]})]  # no logprobs: echo unsupported
    with pytest.raises(UnpactError, match="must support `echo` with `logprobs`"):
        scorer.score(["q"], ["a"])


def test_an_unreachable_server_is_one_line():
    client = CompletionsClient("http://127.0.0.1:1/v1", retries=1, backoff=0.0, timeout=2)
    with pytest.raises(UnpactError, match=r"127.0.0.1:1/v1/models: no answer after 2 attempts \(ConnectError"):
        client.model()


def test_answer_logprobs_are_the_tokens_after_the_prompt(server):
    url, script = server
    client = CompletionsClient(url, concurrency=3)
    tok = ServedTokenizer(client, bos_text="^")
    scorer = ServedScorer(client, PlainFormat(tok))
    enc = scorer.fmt.encode("Who?")
    answer = scorer.fmt.encode_answer("Ann")
    assert tok.decode(enc.ids) == "Question: Who?\nAnswer:" and tok.decode(answer) == " Ann"
    s = scorer.score_ids([enc.ids], [answer])
    text = "Question: Who?\nAnswer: Ann"  # as the server counts offsets: without the BOS
    expected = [-(i + 1) / 10 for i in range(len(text) - 4, len(text))]  # " Ann": the last four characters
    assert s.per_token[0].tolist() == pytest.approx(expected)
    n = len(script.seen)
    scorer.score_ids([enc.ids], [answer])  # cached: no new request
    assert len(script.seen) == n
    assert all(body["prompt"].startswith("^") and body["max_tokens"] == 1 for body in script.seen)


def test_what_needs_weights_is_refused_with_the_reason(server):
    url, _ = server
    client = CompletionsClient(url)
    scorer = ServedScorer(client, PlainFormat(ServedTokenizer(client)))
    with pytest.raises(UnpactError, match="served model: this needs its weights"):
        scorer.model  # noqa: B018
    with pytest.raises(UnpactError, match="mask.*delete"):
        scorer.score_ids([[0]], [[0]], hidden=[[0]])
    with pytest.raises(UnpactError, match="Min-K%\\+\\+"):
        scorer.score_ids([[0]], [[0]], distribution=True)


def test_audit_with_an_unreachable_server_is_one_error_line(tiny, tmp_path, capsys):
    from unpact.cli import main

    model, tok, _ = tiny
    model.save_pretrained(tmp_path / "local", safe_serialization=True)
    tok.save_pretrained(tmp_path / "local")
    forget = tmp_path / "forget.jsonl"
    forget.write_text('{"question": "Where was Ann born?", "answer": "Paris"}\n')
    argv = ["audit", "--original", "http://127.0.0.1:1/v1", "--unlearned", str(tmp_path / "local"),
            "--forget", str(forget), "--retries", "0", "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: http://127.0.0.1:1/v1/models: no answer after 1 attempts")
    assert main(argv[:5] + ["--forget", str(tmp_path / "missing.jsonl")] + argv[7:]) == 2
    err = capsys.readouterr().err
    assert "--forget" in err and "missing.jsonl: file not found" in err
    argv_weights = argv + ["--attacks", "relearn"]
    assert main(argv_weights) == 2
    assert "attack relearn changes the weights, which a served model does not give" in capsys.readouterr().err
    assert main(argv + ["--attacks", "sampling,logit_lens,probe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attack logit_lens reads every layer's hidden states; attack probe reads the hidden " \
        "states, which a served model does not give; use --attacks with sampling" in err[0]


def test_commands_that_need_weights_refuse_a_url_in_one_line(tmp_path, capsys):
    """`unpact unlearn --model URL` and a study whose model is a URL say why, not "folder not found"."""
    from unpact.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for split in ("forget", "retain"):
        (data / f"{split}.jsonl").write_text('{"question": "Where was Ann born?", "answer": "Paris"}\n')
    assert main(["unlearn", "--model", "http://user:pw@127.0.0.1:1/v1", "--method", "NPO_GDR", "--data", str(data),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "http://127.0.0.1:1/v1: a served model gives log-probs and answers, not its weights" in err[0]
    assert "pw" not in err[0]
    config = tmp_path / "study.yaml"
    config.write_text("name: s\nmodels: [{name: m, path: 'http://127.0.0.1:1/v1'}]\n"
                      "benchmarks: [{name: b, builtin: {}}]\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "models[0].path" in err and "unpact audit" in err


def test_both_backends_declare_capabilities_and_a_lacking_one_is_refused_in_one_line(server, tiny_scorer):
    from unpact.attribution.gradients import gradient_attributions
    from unpact.scoring import Capabilities, ScoringBackend, require

    url, script = server
    client = CompletionsClient(url)
    scorer = ServedScorer(client, PlainFormat(ServedTokenizer(client)))
    assert isinstance(scorer, ScoringBackend) and isinstance(tiny_scorer, ScoringBackend)
    assert scorer.capabilities == Capabilities(weights=False, distribution=False, hidden_states=False)
    assert tiny_scorer.capabilities == Capabilities(weights=True, distribution=True, hidden_states=True)
    require(tiny_scorer, "everything", "weights", "distribution", "hidden_states")  # the local one has it all
    asked = len(script.seen)
    with pytest.raises(UnpactError) as err:
        gradient_attributions(scorer, ["Who?"], ["Ann"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{url}: gradient attribution needs the model's weights and the model's internals")
    assert message.endswith("use a local model (a folder or known name)")
    assert len(script.seen) == asked  # refused before a single request
    with pytest.raises(UnpactError, match=r": Min-K%\+\+ needs the full next-token distribution, which"):
        require(scorer, "Min-K%++", "distribution")
