"""Models named by Hugging Face Hub id, without the network: a local Hugging Face cache in a temporary
HF_HOME, in the hub's own layout (models--ORG--NAME/{blobs,refs,snapshots/<commit>}), holding a tiny
model unpact made, loaded by id with HF_HUB_OFFLINE=1 through huggingface_hub's own API. The errors a
user online meets (gated model, unknown revision, no safetensors) come from a stand-in for the Hub's API
(HF_ENDPOINT) answering as the Hub does, so the library's own error classes are what unpact reads."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from unpact.cli import main
from unpact.data import SPLITS, builtin
from unpact.errors import UnpactError
from unpact.models import hub, load_model
from unpact.models.builtin import BuiltinModelConfig, build_model, train_tokenizer
from unpact.models.loading import save_model
from unpact.models.registry import model_path

FIX = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
REPO = "unpact-test/tiny"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny model unpact made, saved as a Hugging Face folder (safetensors, tokenizer files); its
    context (4096) holds the presets' longest prompts, as the real models' do."""
    items = builtin.generate(seed=0)
    tok = train_tokenizer([f"Question: {it.question}\nAnswer: {it.answer}" for s in SPLITS for it in items[s]],
                          vocab_size=400)
    cfg = BuiltinModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=1,
                             max_positions=4096)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_model(build_model(cfg, tok).eval(), tok, folder)
    return folder


def put_in_cache(cache: Path, repo_id: str, folder: Path, ref: str = "main", skip: tuple[str, ...] = (),
                 extra: dict[str, bytes] | None = None) -> str:
    """Write ``folder``'s files into the hub cache as a download leaves them: content-addressed blobs,
    the snapshot of one commit linking to them, and ``refs/<ref>`` naming that commit. Returns the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()
    files = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and f.name not in skip}
    for name, data in {**files, **(extra or {})}.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in a temporary HF_HOME, offline, with no token anywhere."""
    import huggingface_hub.constants as C

    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("UNPACT_CACHE", str(tmp_path / "unpact-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # huggingface_hub turned these variables into constants when it was first imported (before this
    # test set them): give the constants the values the variables now say
    for name, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True),
                        ("HF_TOKEN_PATH", str(home / "token")), ("HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))):
        monkeypatch.setattr(C, name, value)
    monkeypatch.setattr(hub, "_PINNED", {})  # commits pinned by earlier tests belong to their caches
    monkeypatch.setattr(hub, "_RESOLVED", {})
    monkeypatch.setattr(hub, "_FROM_CACHE", set())
    monkeypatch.setattr(hub, "_SNAPSHOTS", {})
    monkeypatch.chdir(tmp_path)  # a bare ORG/NAME names the hub only where no such folder exists
    return cache


def one_line_error(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- loading by id from the cache, offline ---------------------------------------------------------------


def test_hub_ids_load_from_the_cache_offline(hf_cache, tiny_folder):
    commit = put_in_cache(hf_cache, REPO, tiny_folder)
    for ref in (f"hf://{REPO}", REPO, f"hf:/{REPO}"):  # hf:/ is what a Path argument makes of hf://
        model, tok = load_model(ref)
        assert model.config.max_position_embeddings == 4096 and tok.pad_token_id is not None
    snap = model_path(f"hf://{REPO}")
    assert snap.name == commit and snap.parent.parent.name == "models--unpact-test--tiny"
    assert hub.resolved()[f"hf://{REPO}"] == {"repo": REPO, "revision": "main", "commit": commit,
                                                "pinned": f"hf://{REPO}@{commit}"}


def test_revisions_offline_tag_and_commit(hf_cache, tiny_folder, tmp_path):
    main_commit = put_in_cache(hf_cache, REPO, tiny_folder)
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    v1 = put_in_cache(hf_cache, REPO, other, ref="v1")
    assert v1 != main_commit
    assert load_model(f"hf://{REPO}@v1")[0].config.max_position_embeddings == 2048
    assert load_model(f"{REPO}@{main_commit}")[0].config.max_position_embeddings == 4096
    with pytest.raises(UnpactError, match=r"revision 'v9' of unpact-test/tiny is not in the Hugging Face cache.*"
                                          r"HF_HUB_OFFLINE=1.*hf download unpact-test/tiny --revision v9"):
        load_model(f"hf://{REPO}@v9")


def test_offline_nothing_cached_is_one_line_naming_the_fix(hf_cache, capsys):
    err = one_line_error(capsys, "attribute", "--model", "hf://meta-llama/Llama-3.2-1B-Instruct",
                         "--prompt", "Q?", "--answer", "A")
    for fragment in ("meta-llama/Llama-3.2-1B-Instruct is not in the Hugging Face cache", str(hf_cache),
                     "HF_HUB_OFFLINE=1", "hf download meta-llama/Llama-3.2-1B-Instruct"):
        assert fragment in err, err
    # the first try: a bare id that is no local folder is a hub id, not "model folder not found"
    err = one_line_error(capsys, "attribute", "--model", "meta-llama/Llama-3.2-1B-Instruct", "--prompt", "Q?",
                         "--answer", "A")
    assert err.startswith("error: meta-llama/Llama-3.2-1B-Instruct (no such local folder either): ") and \
        "not in the Hugging Face cache" in err


def test_cached_snapshot_without_safetensors_is_refused(hf_cache, tiny_folder):
    put_in_cache(hf_cache, REPO, tiny_folder, skip=("model.safetensors",), extra={"pytorch_model.bin": b"pickle"})
    with pytest.raises(UnpactError, match="holds no .safetensors weights"):
        load_model(f"hf://{REPO}")


def test_ill_formed_ids_and_local_folders(hf_cache, tiny_folder, tmp_path):
    for bad in ("hf://just-a-name", "hf://a/b/c", "hf://org/na--me"):
        with pytest.raises(UnpactError, match="not a Hugging Face model id"):
            hub.parse(bad)
    local = tmp_path / "org" / "name"
    shutil.copytree(tiny_folder, local)
    assert hub.parse("org/name") is None  # a local folder wins over the hub id it spells
    assert hub.parse(str(tmp_path / "nowhere")) is None and hub.parse("smollm2-135m") is None
    assert hub.parse("http://127.0.0.1:8080/v1") is None


def test_study_config_refuses_bad_hub_ids(tmp_path):
    from unpact.config import load_config

    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: s\nmodels: [{name: m, path: 'hf://only-one-part'}]\n")
    with pytest.raises(UnpactError, match=r"models\[0\]\.path: hf://only-one-part: not a Hugging Face model id"):
        load_config(cfg)
    cfg.write_text("name: s\nmodels: [{name: m, path: hf://a/b, gold: 'http://host:1/v1'}]\n")
    with pytest.raises(UnpactError, match=r"models\[0\]\.gold.*attacked through its weights"):
        load_config(cfg)


# -- the Hub's answers online, from a stand-in for its API ---------------------------------------------------


class _HubAPI(BaseHTTPRequestHandler):
    """Answers GET /api/models/ORG/NAME[/revision/REV] as the Hub does for a few repositories."""

    seen: list[dict] = []
    files: dict[str, bytes] = {}  # org/served's files, at commit SERVED

    def do_HEAD(self):  # noqa: N802
        self.do_GET(body=False)

    def do_GET(self, body: bool = True):  # noqa: N802 (http.server's name)
        _HubAPI.seen.append({"path": self.path, "authorization": self.headers.get("authorization")})
        parts = self.path.split("?")[0].split("/")  # '', api, models, org, name[, revision|tree, rev]
        if parts[1] != "api":  # /org/served/resolve/<commit>/<file>: a file download
            return self._send(200, self.files[parts[-1]], {"X-Repo-Commit": SERVED,
                              "ETag": f'"{hashlib.sha256(self.files[parts[-1]]).hexdigest()}"'}, body)
        repo, revision = "/".join(parts[3:5]), parts[6] if len(parts) > 6 else "main"
        if repo == "org/served" and parts[5:6] == ["tree"]:
            tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in self.files.items()]
            return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
        if repo == "org/served":
            info = {"id": repo, "sha": SERVED, "siblings": [{"rfilename": f} for f in self.files]}
            return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if repo == "org/gated":
            return self._error(401, "GatedRepo", "Access to model org/gated is restricted.")
        if repo == "org/missing":
            return self._error(401, "RepoNotFound", "Repository not found")
        if revision == "nope":
            return self._error(404, "RevisionNotFound", "Invalid rev id: nope")
        files = ["config.json", "pytorch_model.bin", "tokenizer.json"] if repo == "org/pickled" else ["config.json"]
        body = json.dumps({"id": repo, "sha": "a" * 40, "siblings": [{"rfilename": f} for f in files]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send(self, status: int, data: bytes, headers: dict, body: bool = True):
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str):
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def online(hf_cache, monkeypatch):
    """Online (HF_HUB_OFFLINE=0), against the stand-in API at HF_ENDPOINT."""
    import huggingface_hub.constants as C

    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(C, "ENDPOINT", endpoint)
    monkeypatch.setattr(C, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    _HubAPI.seen = []
    yield endpoint
    server.shutdown()


def test_gated_model_names_hf_token_never_its_value(online, capsys, monkeypatch):
    err = one_line_error(capsys, "attribute", "--model", "hf://org/gated", "--prompt", "Q?", "--answer", "A")
    assert "org/gated is gated" in err and "https://huggingface.co/org/gated" in err and "set HF_TOKEN" in err
    secret = "hf_SECRETsecretSECRET1234"
    monkeypatch.setenv("HF_TOKEN", secret)
    err = one_line_error(capsys, "attribute", "--model", "hf://org/gated", "--prompt", "Q?", "--answer", "A")
    assert "the one in HF_TOKEN" in err and "refused" in err and secret not in err
    assert _HubAPI.seen[-1]["authorization"] == f"Bearer {secret}"  # the library sent it; unpact never shows it


def test_unknown_revision_missing_repo_and_pickle_only_repo_online(online):
    with pytest.raises(UnpactError, match=r"hf://org/model@nope: revision 'nope' does not exist in org/model"):
        load_model("hf://org/model@nope")
    with pytest.raises(UnpactError, match=r"org/missing \(no such local folder either\): no such model on the "
                                          r"Hugging Face Hub.*HF_TOKEN"):
        load_model("org/missing")
    with pytest.raises(UnpactError, match=r"has no .safetensors weights \(it has pytorch_model.bin\); unpact "
                                          r"downloads only safetensors"):
        load_model("hf://org/pickled")
    assert not any("resolve" in r["path"] for r in _HubAPI.seen)  # refused before any file was asked for


SERVED = "5" * 40  # the commit the stand-in's main branch is at


def test_online_download_fetches_only_safetensors_config_and_tokenizer(online, hf_cache, tiny_folder):
    _HubAPI.files = {f.name: f.read_bytes() for f in tiny_folder.iterdir()}
    # beside the weights transformers loads: a pickle, Python, a readme and the same weights in another
    # layout (as Mistral's repositories carry consolidated.safetensors): none of them is fetched
    _HubAPI.files |= {"pytorch_model.bin": b"a pickle", "modeling_custom.py": b"import os", "README.md": b"hi",
                      "consolidated.safetensors": b"the same weights again"}
    model, _ = load_model("hf://org/served")
    assert model.config.max_position_embeddings == 4096
    fetched = {r["path"].rsplit("/", 1)[-1] for r in _HubAPI.seen if "/resolve/" in r["path"]}
    assert fetched == {f.name for f in tiny_folder.iterdir()}
    snapshot = hf_cache / "models--org--served" / "snapshots" / SERVED
    assert (snapshot / "model.safetensors").is_file() and not (snapshot / "pytorch_model.bin").exists()
    assert hub.resolved()["hf://org/served"]["commit"] == SERVED
    # the commit is pinned for the process: loading again asks the Hub nothing about the branch
    asked = len(_HubAPI.seen)
    load_model("hf://org/served")
    assert not any("/revision/" in r["path"] for r in _HubAPI.seen[asked:])


# -- the command line and a study, from the cache -------------------------------------------------------------


def test_attribute_command_on_a_hub_id(hf_cache, tiny_folder, capsys):
    put_in_cache(hf_cache, REPO, tiny_folder)
    code = main(["attribute", "--model", f"hf://{REPO}", "--prompt", "Where was Marthe Bramley born?",
                 "--answer", "Drennick", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)
    # one contribution per question token, from the cached model's own tokenizer
    assert "".join(r["token"] for r in rows).strip() == "Where was Marthe Bramley born?"
    assert all(isinstance(r["contribution"], float) for r in rows)


def test_unlearn_command_on_a_hub_id(hf_cache, tiny_folder, tmp_path, capsys):
    put_in_cache(hf_cache, REPO, tiny_folder)
    items = builtin.generate(seed=0)
    for split in ("forget", "retain"):
        _write_rows(tmp_path / "data" / f"{split}.jsonl", [it.to_dict() for it in items[split][:4]])
    code = main(["unlearn", "--model", f"hf://{REPO}", "--method", "GA", "--data", str(tmp_path / "data"),
                 "--epochs", "1", "--out", str(tmp_path / "unlearned")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "unlearned" / "model.safetensors").is_file()
    # the hub model's cached files are left as they were: the unlearned model is written to --out only
    snapshot = model_path(f"hf://{REPO}")
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_folder / "model.safetensors").read_bytes()


def test_study_with_hub_original_and_gold_records_commits(hf_cache, tiny_folder, tmp_path, capsys, monkeypatch):
    from unpact.config import GridConfig, from_dict, validate_grid
    from unpact.io import read_json
    from unpact.study import Grid

    secret = "hf_SECRETsecretSECRET1234"
    monkeypatch.setenv("HF_TOKEN", secret)  # what a user online has set: it must reach no file of the run
    commit = put_in_cache(hf_cache, REPO, tiny_folder)
    gold_commit = put_in_cache(hf_cache, "unpact-test/tiny-gold", tiny_folder)
    cfg = validate_grid(from_dict(GridConfig, {
        "name": "hub", "keep_models": False,
        "models": [{"name": "tiny", "path": f"hf://{REPO}", "gold": "unpact-test/tiny-gold"}],
        "benchmarks": [{"name": "b", "builtin": {"n_entities": 10}}],
        "methods": [{"method": "GA", "lr": 0.001, "epochs": 1}],
        "recovery": {"attacks": [], "styles": ["instruction"]},
    }))
    metrics = Grid(cfg, tmp_path / "run").run()
    manifest = read_json(tmp_path / "run" / "manifest.json")
    assert manifest["models"]["tiny"]["path"]["commit"] == commit
    assert manifest["models"]["tiny"]["gold"] == {"repo": "unpact-test/tiny-gold", "revision": "main",
                                                  "commit": gold_commit,
                                                  "pinned": f"hf://unpact-test/tiny-gold@{gold_commit}"}
    assert manifest["history"][-1]["models"] == manifest["models"]
    group = metrics["groups"][0]
    # the gold model is measured (standard metrics) and attacked (the calibration control)
    assert group["gold"] is not None and "tofu" in group["gold"]["standard"]
    assert group["methods"]["GA"]["calibrated"]
    assert group["model"]["path"] == f"hf://{REPO} (commit {commit})"  # not the machine's cache folder
    capsys.readouterr()
    # the same study's dry run, from the cache: its one cell is done (same commit, same keys)
    assert main(["run", str(_yaml(tmp_path, cfg)), "--dry-run", "--out", str(tmp_path / "run")]) == 0
    assert "1 cells in" in (out := capsys.readouterr().out) and "1 done, 0 to run" in out, out
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_audit_with_hub_ids_on_every_side(hf_cache, tiny_folder, tmp_path, capsys):
    from unpact.io import read_json

    put_in_cache(hf_cache, REPO, tiny_folder)
    commit = put_in_cache(hf_cache, "unpact-test/tiny-unlearned", tiny_folder)
    put_in_cache(hf_cache, "unpact-test/tiny-gold", tiny_folder)
    items = builtin.generate(seed=0)
    for split in ("forget", "retain"):
        _write_rows(tmp_path / f"{split}.jsonl", [{"question": it.question, "answer": it.answer}
                                                  for it in items[split][:4]])
    code = main(["audit", "--original", f"hf://{REPO}", "--unlearned", "unpact-test/tiny-unlearned",
                 "--gold", "hf://unpact-test/tiny-gold", "--forget", str(tmp_path / "forget.jsonl"),
                 "--retain", str(tmp_path / "retain.jsonl"), "--attacks", "paraphrase", "--out",
                 str(tmp_path / "audit"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    verdict = read_json(tmp_path / "audit" / "verdict.json")
    # named with the commit it resolved to, which pins the same weights again
    assert verdict["quadrant"] and verdict["models"]["unlearned"] == f"unpact-test/tiny-unlearned (commit {commit})"
    # the gold model was attacked: the attacks are calibrated against it
    assert (tmp_path / "audit" / "gold.json").is_file()


def test_recover_with_hub_ids(hf_cache, tiny_folder, tmp_path, capsys):
    from unpact.io import read_json

    for repo in (REPO, "unpact-test/tiny-unlearned", "unpact-test/tiny-gold"):
        put_in_cache(hf_cache, repo, tiny_folder)
    items = builtin.generate(seed=0)
    for split in SPLITS:
        _write_rows(tmp_path / "data" / f"{split}.jsonl", [it.to_dict() for it in items[split][:4]])
    code = main(["recover", "--original", f"hf://{REPO}", "--model", "npo=unpact-test/tiny-unlearned",
                 "--gold", "hf://unpact-test/tiny-gold", "--data", str(tmp_path / "data"), "--attacks", "paraphrase",
                 "--out", str(tmp_path / "recover"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = read_json(tmp_path / "recover" / "metrics.json")
    assert "npo" in metrics["methods"] and metrics["gold"] is not None


def _yaml(tmp_path: Path, cfg) -> Path:
    import yaml

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


# -- the presets validate against a cache made the same way -----------------------------------------------------


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_rows(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def _hub_data(unpact_cache: Path, repo_id: str) -> Path:
    """A hub dataset's folder as `fetch_hub` leaves it (complete)."""
    folder = unpact_cache / "hub" / repo_id.replace("/", "__")
    folder.mkdir(parents=True)
    (folder / ".complete").touch()
    return folder


def _tofu(unpact_cache: Path) -> None:
    folder = _hub_data(unpact_cache, "locuslab/TOFU")
    facts, authors = _rows(FIX / "tofu" / "world_facts_perturbed.json"), _rows(FIX / "tofu" / "real_authors_perturbed.json")
    _write_rows(folder / "forget10_perturbed.json", authors[:20])
    _write_rows(folder / "retain90.json", authors[20:])
    shutil.copy(FIX / "tofu" / "real_authors_perturbed.json", folder)
    _write_rows(folder / "world_facts_perturbed.json", facts)


def _muse(unpact_cache: Path) -> None:
    folder = _hub_data(unpact_cache, "muse-bench/MUSE-News")
    shutil.copytree(FIX / "muse_news", folder, dirs_exist_ok=True)
    qa = json.loads((FIX / "muse_news" / "knowmem" / "forget_qa.json").read_text(encoding="utf-8"))
    (folder / "knowmem" / "retain_qa.json").write_text(json.dumps(qa[:50]), encoding="utf-8")
    passages = json.loads((FIX / "muse_news" / "verbmem" / "forget.json").read_text(encoding="utf-8"))
    _write_rows(folder / "raw" / "forget.json", [{"text": p["prompt"] + p["gt"]} for p in passages[:4]])
    _write_rows(folder / "raw" / "retain1.json", [{"text": p["prompt"] + p["gt"]} for p in passages[4:8]])


def _wmdp(unpact_cache: Path) -> None:
    with open(FIX / "mmlu" / "test" / "abstract_algebra_test.csv", encoding="utf-8", newline="") as f:
        rows = [{"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5])} for r in csv.reader(f)]
    wmdp = _hub_data(unpact_cache, "cais/wmdp")
    _write_rows(wmdp / "test" / "wmdp-bio.json", rows[:10])
    _write_rows(wmdp / "test" / "wmdp-cyber.json", rows[10:20])
    mmlu = _hub_data(unpact_cache, "cais/mmlu")
    for i, subject in enumerate(("college_biology", "virology", "college_computer_science", "computer_security")):
        _write_rows(mmlu / "test" / f"{subject}.json", rows[20 + 10 * i:30 + 10 * i])
        _write_rows(mmlu / "dev" / f"{subject}.json", rows[60 + 5 * i:65 + 5 * i])


PRESETS = {"tofu-llama3.2-1b": _tofu, "muse-news": _muse, "wmdp-zephyr": _wmdp}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_dry_runs_from_a_populated_cache(preset, hf_cache, tiny_folder, tmp_path, capsys):
    from unpact.config import load_config

    config = ROOT / "configs" / f"{preset}.yaml"
    cfg = load_config(config)
    for m in cfg.models:  # the preset's own hub ids, each holding the tiny model
        for ref in filter(None, (m.path, m.gold)):
            put_in_cache(hf_cache, hub.parse(ref).repo_id, tiny_folder)
    PRESETS[preset](tmp_path / "unpact-cache")
    code = main(["run", str(config), "--dry-run", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    n = len(cfg.methods) * len(cfg.models) * len(cfg.benchmarks)
    assert f"{n} cells in {tmp_path / 'run'}: 0 done, {n} to run" in out
    for m in cfg.models:  # each hub model with the commit a run would use
        assert f"hub    {m.path} → commit " in out and ", weights in the cache" in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_preset_dry_run_offline_with_nothing_cached(hf_cache, tmp_path, capsys):
    _tofu(tmp_path / "unpact-cache")
    err = one_line_error(capsys, "run", str(ROOT / "configs" / "tofu-llama3.2-1b.yaml"), "--dry-run",
                         "--out", str(tmp_path / "run"))
    assert "open-unlearning/tofu_Llama-3.2-1B-Instruct_full is not in the Hugging Face cache" in err


def test_real_environment_variables_in_a_fresh_process(tmp_path, tiny_folder):
    """The variables as a user sets them, read by huggingface_hub at import (no patched constants)."""
    home = tmp_path / "hf-home"
    put_in_cache(home / "hub", REPO, tiny_folder)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src"),
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "unpact.cli", "attribute", "--model", f"hf://{REPO}", "--prompt",
                           "Where was Marthe Bramley born?", "--answer", "Drennick", "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)


def test_preset_dry_run_measures_prompts_with_the_cached_model(hf_cache, tiny_folder, tmp_path, capsys):
    """The dry run reads the cached snapshot's tokenizer and context: a context too short for TOFU's
    sentence answers is refused before anything is downloaded or trained."""
    short = tmp_path / "short"
    shutil.copytree(tiny_folder, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 48}))
    put_in_cache(hf_cache, "open-unlearning/tofu_Llama-3.2-1B-Instruct_full", short)
    put_in_cache(hf_cache, "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90", short)
    _tofu(tmp_path / "unpact-cache")
    err = one_line_error(capsys, "run", str(ROOT / "configs" / "tofu-llama3.2-1b.yaml"), "--dry-run",
                         "--out", str(tmp_path / "run"))
    assert "context of 48" in err and "hf://open-unlearning/tofu_Llama-3.2-1B-Instruct_full (commit " in err, err
