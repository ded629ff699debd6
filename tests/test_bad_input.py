"""A corpus of bad inputs, one case each: data files, benchmark folders, prompts past the context, study
configs, model folders (untrusted weights and code included) and command-line arguments.

Every case runs the real `unpact` command in-process and must end with exit code 2 and a single line
``error: …`` that names the offending file, field or value and says what to do; argparse-level mistakes
exit 2 with argparse's own usage message. Nothing here trains a model: model folders are the tiny
random model of conftest, saved once, or hand-made folders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from unpact.cli import main
from unpact.config import load_config
from unpact.data import load_items

Q, A = "Where was Marthe Bramley born?", "Drennick"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"


def assert_argparse_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("unpact") and "error:" in last, err
    for f in fragments:
        assert f in last, f"{f!r} not in {last!r}"


@pytest.fixture(scope="module")
def model_dir(tiny, tmp_path_factory) -> Path:
    """The tiny random model of conftest as a model folder (safetensors, tokenizer, 128-token context)."""
    model, tok, _ = tiny
    out = tmp_path_factory.mktemp("bad_input_model")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def variant(model_dir: Path, dest: Path, drop=(), config=None, tokenizer_config=None) -> Path:
    """A copy of the tiny model folder without the files in ``drop`` and with edited JSON settings."""
    shutil.copytree(model_dir, dest, ignore=shutil.ignore_patterns(*drop))
    for name, edit in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if edit is not None:
            settings = json.loads((dest / name).read_text())
            edit(settings)
            (dest / name).write_text(json.dumps(settings))
    return dest


def row(**fields) -> str:
    return json.dumps({"id": "f1", "question": "Where was Orsa Velin born?", "answer": "Quillmoor", **fields}) + "\n"


def without(key: str) -> str:
    fields = {"id": "f1", "question": "Where was Orsa Velin born?", "answer": "Quillmoor"}
    del fields[key]
    return json.dumps(fields) + "\n"


# -- data files: unpact's JSON Lines items (`unpact unlearn --data`) ------------------------------

DATA_CASES = [
    ("invalid_json_line", row() + '{"id": "f2", "question": "Who?", "answer": "Me"\n',
     ["forget.jsonl:2", "invalid JSON", "fix that line"]),
    ("missing_question", without("question"), ["forget.jsonl:1", "missing field 'question'", "every item needs"]),
    ("missing_answer", without("answer"), ["forget.jsonl:1", "missing field 'answer'", "every item needs"]),
    ("missing_id", without("id"), ["forget.jsonl:1", "missing field 'id'", "every item needs"]),
    ("misspelt_anwser", json.dumps({"id": "f1", "question": "Who?", "anwser": "Me"}) + "\n",
     ["forget.jsonl:1", "missing field 'answer'", "found 'anwser'", "rename it to 'answer'"]),
    ("answer_is_a_number", row(answer=1472), ["forget.jsonl:1", "field 'answer' must be a string, got int", "JSON string"]),
    ("question_is_a_list", row(question=["Who", "?"]), ["forget.jsonl:1", "field 'question' must be a string, got list"]),
    ("id_is_a_number", row(id=7), ["forget.jsonl:1", "field 'id' must be a string, got int", "JSON string"]),
    ("entity_is_a_number", row(entity=3), ["forget.jsonl:1", "field 'entity' must be a string", "JSON string"]),
    ("perturbed_answers_not_a_list", row(perturbed_answers="Drennick"),
     ["forget.jsonl:1", "'perturbed_answers' must be a list of strings, got str", "write ["]),
    ("perturbed_answer_not_a_string", row(perturbed_answers=["Drennick", 5]),
     ["forget.jsonl:1", "'perturbed_answers[1]' must be a string, got int"]),
    ("empty_answer", row(answer=""), ["forget.jsonl:1", "field 'answer' is empty", "drop the item"]),
    ("whitespace_only_answer", row(answer=" \t "), ["forget.jsonl:1", "field 'answer' is empty", "drop the item"]),
    ("whitespace_only_question", row(question="\n"), ["forget.jsonl:1", "field 'question' is empty"]),
    ("non_utf8_bytes", b'{"id": "f1", "question": "Who?", "answer": "caf\xe9"}\n',
     ["forget.jsonl", "not UTF-8", "re-encode the file as UTF-8"]),
    ("duplicate_ids", row() + row(question="Who wrote it?"), ["forget.jsonl:2", "duplicate id 'f1'", "must be unique"]),
    ("huge_answer_5mb", row(answer="x" * 5_000_000),
     ["forget.jsonl:1", "field 'answer' is 5,000,000 characters", "shorten it or drop the item"]),
    ("empty_file", "", ["forget.jsonl", "no items; the file is empty", "add one JSON object per line"]),
    ("blank_lines_only", "\n  \n\n", ["forget.jsonl", "no items"]),
    ("malformed_json_list", '[{"id": "f1", "question": "Who?", "answer": "Me"},\n {"id": "f2", "quest',
     ["forget.jsonl:1", "invalid JSON", "one JSON object per line"]),
    ("json_list_instead_of_lines", json.dumps([json.loads(row())]),
     ["forget.jsonl:1", "expected a JSON object, got list", "one JSON object per line"]),
    ("line_is_a_string", row() + '"just text"\n', ["forget.jsonl:2", "expected a JSON object, got str"]),
]


@pytest.mark.parametrize("content, fragments", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(capsys, tmp_path, content, fragments):
    data = tmp_path / "data"
    data.mkdir()
    forget = data / "forget.jsonl"
    forget.write_bytes(content) if isinstance(content, bytes) else forget.write_text(content, encoding="utf-8")
    (data / "retain.jsonl").write_text(json.dumps({"id": "r1", "question": "Who?", "answer": "Me"}) + "\n")
    # the data is checked before the model is loaded, so no model folder is needed
    code, _, err = run_cli(capsys, "unlearn", "--model", tmp_path / "model", "--method", "GA_GDR",
                           "--out", tmp_path / "out", "--data", data)
    assert_one_line_error(code, err, str(data), *fragments)


def test_missing_data_folder_and_file(capsys, tmp_path):
    args = ("unlearn", "--model", tmp_path / "model", "--method", "GA_GDR", "--out", tmp_path / "out")
    code, _, err = run_cli(capsys, *args, "--data", tmp_path / "nowhere")
    assert_one_line_error(code, err, "--data", "nowhere", "folder not found", "forget.jsonl and retain.jsonl")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "forget.jsonl").write_text(row())
    code, _, err = run_cli(capsys, *args, "--data", tmp_path / "d")
    assert_one_line_error(code, err, str(tmp_path / "d" / "retain.jsonl"), "data file not found", "check the path")


def test_byte_order_mark_is_accepted(tmp_path):
    """Windows editors start UTF-8 files with a BOM; it is not an error."""
    path = tmp_path / "forget.jsonl"
    path.write_text("\ufeff" + row(), encoding="utf-8")
    assert [it.id for it in load_items(path)] == ["f1"]


# -- benchmark folders in published layouts (`unpact run CONFIG --dry-run`) -------------------------

QA = json.dumps({"question": "Who wrote it?", "answer": "Me", "perturbed_answer": ["You", "Them"]}) + "\n"
MUSE_QA = json.dumps([{"question": "What year?", "answer": "1472"}])
CHOICE = {"question": "Which?", "choices": ["a", "b", "c", "d"], "answer": 1}

FOLDER_CASES = [
    ("jsonl_without_retain", "jsonl", {}, {"forget.jsonl": QA},
     ["retain.jsonl", "retain file not found", "the folder has: forget.jsonl"]),
    ("jsonl_row_without_answer", "jsonl", {}, {"forget.jsonl": '{"question": "Who?"}\n', "retain.jsonl": QA},
     ["forget.jsonl:1", "missing field 'answer'"]),
    ("tofu_missing_forget10", "tofu", {}, {"retain90.json": QA},
     ["forget10.json", "TOFU config 'forget10' not found", "the folder has: retain90"]),
    ("tofu_perturbed_not_a_list", "tofu", {},
     {"forget10.json": json.dumps({"question": "Q?", "answer": "A", "perturbed_answer": "B"}) + "\n",
      "retain90.json": QA},
     ["forget10.json:1", "'perturbed_answers' must be a list of strings"]),
    ("tofu_malformed_json_list", "tofu", {}, {"forget10.json": '[{"question": "Q?", "answer": "A"},', "retain90.json": QA},
     ["forget10.json:1", "invalid JSON", "fix the file"]),
    ("tofu_forget_without_retain_pair", "tofu", {"forget": "authors"}, {"authors.json": QA},
     ["cannot derive the retain config from forget='authors'", "pass retain=<config>"]),
    ("muse_missing_forget_qa", "muse", {}, {"knowmem/retain_qa.json": MUSE_QA},
     ["knowmem/forget_qa.json", "MUSE forget set", "not found", "the folder has: retain_qa.json"]),
    ("muse_verbmem_missing_gt", "muse", {},
     {"knowmem/forget_qa.json": MUSE_QA, "knowmem/retain_qa.json": MUSE_QA,
      "verbmem/forget.json": json.dumps([{"prompt": "It was the best of times"}])},
     ["verbmem/forget.json:1", "'gt'", "this row has: prompt", "fix or drop the row"]),
    ("muse_raw_text_not_utf8", "muse", {},
     {"knowmem/forget_qa.json": MUSE_QA, "knowmem/retain_qa.json": MUSE_QA, "raw/forget.txt": b"\xff\xfe book"},
     ["raw/forget.txt", "not UTF-8", "re-encode"]),
    ("mmlu_wrong_column_count", "mmlu", {}, {"dev/algebra_dev.csv": "Q?,a,b,c,D\n", "test/algebra_test.csv": "Q?,a,b,c,d,A\n"},
     ["algebra_dev.csv:1", "expected 6 columns", "got 5"]),
    ("mmlu_answer_letter_E", "mmlu", {}, {"dev/algebra_dev.csv": "Q?,a,b,c,d,E\n", "test/algebra_test.csv": "Q?,a,b,c,d,A\n"},
     ["algebra_dev.csv:1", "answer letter 'E'", "one of A, B, C, D"]),
    ("mmlu_empty_csv", "mmlu", {}, {"dev/algebra_dev.csv": "", "test/algebra_test.csv": "Q?,a,b,c,d,A\n"},
     ["algebra_dev.csv", "no questions", "fill it or remove it"]),
    ("mmlu_empty_question", "mmlu", {}, {"dev/algebra_dev.csv": ",a,b,c,d,A\n", "test/algebra_test.csv": "Q?,a,b,c,d,A\n"},
     ["algebra_dev.csv:1", "'question' must be a non-empty string", "drop the row"]),
    ("mmlu_no_question_files", "mmlu", {}, {"README.txt": "nothing here"},
     ["no multiple-choice files", "expected dev/, val/ or test/"]),
    ("mmlu_hub_answer_out_of_range", "mmlu", {},
     {"test/algebra.json": json.dumps([{**CHOICE, "answer": 7}]), "dev/algebra.json": json.dumps([CHOICE])},
     ["algebra.json:1", "'answer' must be 0..3 (or a letter A-D), got 7"]),
    ("wmdp_retain_without_mmlu", "wmdp", {"retain": "dev"}, {"wmdp-bio.json": json.dumps([CHOICE])},
     ["options retain/utility select MMLU items", "pass mmlu=<MMLU folder>"]),
]


def _study_yaml(tmp_path: Path, benchmark: dict) -> Path:
    cfg = {"name": "bad", "models": [{"name": "m", "path": str(tmp_path / "model")}], "benchmarks": [benchmark],
           "methods": [{"method": "GA_GDR"}]}
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.mark.parametrize("fmt, options, files, fragments", [c[1:] for c in FOLDER_CASES],
                         ids=[c[0] for c in FOLDER_CASES])
def test_bad_benchmark_folder(capsys, tmp_path, fmt, options, files, fragments):
    folder = tmp_path / "bench"
    folder.mkdir()
    for rel, content in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content) if isinstance(content, bytes) else (folder / rel).write_text(content)
    config = _study_yaml(tmp_path, {"name": "b", "path": str(folder), "format": fmt, "options": options})
    code, _, err = run_cli(capsys, "run", config, "--dry-run", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "benchmark b", str(folder), *fragments)


def test_missing_benchmark_folder(capsys, tmp_path):
    config = _study_yaml(tmp_path, {"name": "b", "path": str(tmp_path / "nowhere"), "format": "tofu"})
    code, _, err = run_cli(capsys, "run", config, "--dry-run", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "nowhere", "benchmark folder not found", "pass a folder in the tofu layout")


# -- prompts past the model's context ---------------------------------------------------------------


def test_prompt_past_the_context(capsys, model_dir):
    code, _, err = run_cli(capsys, "attribute", "--model", model_dir, "--prompt", Q * 40, "--answer", A)
    assert_one_line_error(code, err, str(model_dir), "past the model's context of 128", "shorten the question")


def test_data_item_past_the_context(capsys, model_dir, tmp_path):
    """Found before training: a long item would otherwise run past the position range mid-training."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "forget.jsonl").write_text(row(id="long-one", question=Q * 40))
    (data / "retain.jsonl").write_text(row(id="r1"))
    code, _, err = run_cli(capsys, "unlearn", "--model", model_dir, "--method", "GA_GDR", "--out", tmp_path / "out",
                           "--data", data)
    assert_one_line_error(code, err, str(data), "forget item 'long-one'", "past the model's context of 128",
                          "shorten the item or drop it")
    assert not (tmp_path / "out").exists()


# -- study configs (`unpact run CONFIG --dry-run`) ----------------------------------------------------

M = "methods:\n  - "
CONFIG_CASES = [
    ("yaml_syntax_error", "methods: [{method: GA_GDR\nseeds: [0]\n", [":2:", "invalid YAML"]),
    ("yaml_tab_indent", "methods:\n\t- method: GA_GDR\n", [":2:", "invalid YAML", "'\\t'"]),
    ("duplicate_yaml_key", M + "{method: GA_GDR}\nmethods:\n  - {method: NPO}\n",
     [":3:", "duplicate key 'methods'", "keep only one"]),
    ("top_level_is_a_list", "- GA_GDR\n- NPO\n", ["config <root>: expected a mapping"]),
    ("unknown_top_level_key", "methds: []\n", ["config methds: unknown key", "did you mean 'methods'?", "known keys here"]),
    ("unknown_nested_key", "evaluation:\n  rouge_treshold: 0.5\n",
     ["evaluation.rouge_treshold: unknown key", "did you mean 'rouge_threshold'?"]),
    ("unknown_builtin_model_key", "models:\n  - {name: m, builtin: {hiden_size: 64}}\n",
     ["models[0].builtin.hiden_size: unknown key", "did you mean 'hidden_size'?"]),
    ("epochs_is_a_word", M + "{method: GA_GDR, epochs: ten}\n", ["methods[0].epochs: expected int, got 'ten'"]),
    ("epochs_is_a_bool", M + "{method: GA_GDR, epochs: true}\n", ["methods[0].epochs: expected int, got True"]),
    ("negative_learning_rate", M + "{method: GA_GDR, lr: -0.001}\n",
     ["methods[0].lr: -0.001 is invalid", "use a positive learning rate"]),
    ("infinite_learning_rate", M + "{method: GA_GDR, lr: .inf}\n", ["methods[0].lr: inf is not a finite number"]),
    ("zero_epochs", M + "{method: GA_GDR, epochs: 0}\n", ["methods[0].epochs: 0 is invalid", "at least 1 epoch"]),
    ("zero_batch_size", "batch_size: 0\n", ["config batch_size: 0 is invalid", "use an integer ≥ 1"]),
    ("negative_method_batch_size", M + "{method: GA_GDR, batch_size: -4}\n",
     ["methods[0].batch_size: -4 is invalid", "use ≥ 1"]),
    ("keytokens_alpha_above_1", "attribution: {alpha: 1.5}\n", ["attribution.alpha: 1.5 is invalid", "[0, 1)"]),
    ("keytokens_alpha_negative", "attribution: {alpha: -0.1}\n", ["attribution.alpha: -0.1 is invalid", "[0, 1)"]),
    ("keytokens_beta_negative", "attribution: {beta: -1}\n", ["attribution.beta: -1 is invalid", "integer ≥ 0"]),
    ("quality_items_one", "attribution: {quality_items: 1}\n", ["attribution.quality_items: 1 is invalid", "count ≥ 2"]),
    ("rouge_threshold_above_1", "evaluation: {rouge_threshold: 1.5}\n",
     ["evaluation.rouge_threshold: 1.5 is invalid", "use a value in [0, 1]"]),
    ("rouge_threshold_negative", "evaluation: {rouge_threshold: -0.2}\n", ["evaluation.rouge_threshold: -0.2"]),
    ("unknown_method", M + "{method: GradAscent}\n", ["methods[0].method: 'GradAscent' is invalid", "choose from GA"]),
    ("unknown_hyper_parameter", M + "{method: GA_GDR, hparams: {alpha: 1.0, gamma: 2.0}}\n",
     ["methods[0].hparams.gamma: unknown hyper-parameter of GA_GDR", "GA_GDR takes alpha"]),
    ("hyper_parameter_not_a_number", M + "{method: GA_GDR, hparams: {alpha: big}}\n",
     ["methods[0].hparams.alpha: expected a number, got 'big'"]),
    ("hyper_parameter_out_of_range", M + "{method: NPO}\n  - {method: GA}\n  - {method: NPO_GDR, hparams: {beta: 0}}\n",
     ["config methods[2].hparams.beta: 0.0 is out of range (0, inf)", "inverse temperature"]),
    ("integer_hyper_parameter_not_an_integer", M + "{method: RMU, hparams: {layer: 2.5}}\n",
     ["methods[0].hparams.layer: expected an integer, got 2.5"]),
    ("hyper_parameter_a_bool", M + "{method: CEU, hparams: {skip: true}}\n",
     ["methods[0].hparams.skip: expected an integer, got True"]),
    ("empty_methods_list", "methods: []\n", ["config methods: [] is invalid", "list at least one method"]),
    ("same_method_twice", M + "{method: NPO}\n  - {method: NPO}\n", ["methods[1].method: 'NPO' is invalid", "each method once"]),
    ("benchmark_with_builtin_and_path", "benchmarks:\n  - {name: b, builtin: {}, path: data/}\n",
     ["benchmarks[0]: 'b' is invalid", "give exactly one of builtin"]),
    ("unknown_benchmark_format", "benchmarks:\n  - {name: b, path: data/, format: csv}\n",
     ["benchmarks[0].format: 'csv' is invalid", "choose from jsonl, tofu"]),
    ("forget_known_neither_count_nor_all", "benchmarks:\n  - {name: b, builtin: {}, forget_known: most}\n",
     ["benchmarks[0].forget_known: 'most' is invalid", "use 0 (off), a count, or all"]),
    ("forget_known_a_float", "benchmarks:\n  - {name: b, builtin: {}, forget_known: 2.5}\n",
     ["benchmarks[0].forget_known: expected int, got 2.5"]),
    ("unknown_benchmark_option", "benchmarks:\n  - {name: b, path: data/, format: tofu, options: {forgett: forget05}}\n",
     ["benchmarks[0].options.forgett", "did you mean 'forget'?"]),
    ("duplicate_model_names", "models:\n  - {name: m, builtin: {}}\n  - {name: m, builtin: {seed: 1}}\n",
     ["models[1].name: 'm' is invalid", "each name once"]),
    ("duplicate_benchmark_names", "benchmarks:\n  - {name: b, builtin: {}}\n  - {name: b, builtin: {seed: 1}}\n",
     ["benchmarks[1].name: 'b' is invalid", "each name once"]),
    ("model_name_with_slash", "models:\n  - {name: a/b, builtin: {}}\n", ["models[0].name: 'a/b' is invalid", "it names folders"]),
    ("duplicate_seeds", "seeds: [0, 0]\n", ["seeds: [0, 0] is invalid", "list distinct seeds"]),
    ("override_names_unknown_model", "overrides:\n  - {where: {model: nope}, set: {lr: 0.1}}\n",
     ["overrides[0].where.model: 'nope' is invalid", "choose from builtin"]),
    ("override_sets_unknown_field", "overrides:\n  - {where: {}, set: {learning_rate: 0.1}}\n",
     ["overrides[0].set.learning_rate", "set one of"]),
    ("unknown_recovery_attack", "recovery: {attacks: [shouting]}\n",
     ["recovery.attacks[0]: 'shouting' is invalid", "choose from sampling"]),
]


@pytest.mark.parametrize("text, fragments", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(capsys, tmp_path, text, fragments):
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, err = run_cli(capsys, "run", path, "--dry-run", "--out", tmp_path / "run")
    assert_one_line_error(code, err, str(path), *fragments)


def test_config_file_missing_or_not_utf8(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", tmp_path / "nope.yaml", "--dry-run")
    assert_one_line_error(code, err, "nope.yaml", "config file not found")
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    code, _, err = run_cli(capsys, "run", tmp_path / "latin1.yaml", "--dry-run")
    assert_one_line_error(code, err, "latin1.yaml", "not UTF-8", "save the file as UTF-8")


def test_exponent_floats_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads `5e-4` as a string; a learning rate written that way is still a number."""
    path = tmp_path / "study.yaml"
    path.write_text(M + "{method: GA_GDR, lr: 5e-4, hparams: {alpha: 2e0}}\n"
                    "overrides:\n  - {where: {method: GA_GDR}, set: {lr: 1E-3}}\n")
    cfg = load_config(path)
    assert cfg.methods[0].lr == 5e-4 and cfg.methods[0].hparams == {"alpha": 2.0}
    method = cfg.method_for(cfg.methods[0], "builtin", "builtin", 0)
    assert method.lr == 1e-3 and isinstance(method.lr, float)


# -- model folders: missing parts, untrusted weights, untrusted code, tokenizers ----------------------


class _RunsCode:
    """Unpickling this calls exec: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _state_dict(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def _bert(dest: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32)
    BertForMaskedLM(config).save_pretrained(dest)
    return dest


def _custom_code(model_dir: Path, dest: Path, model_type: str, marker: Path) -> Path:
    def edit(c):
        c.update(model_type=model_type, architectures=["EvilForCausalLM"],
                 auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"})

    folder = variant(model_dir, dest, config=edit)
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    return folder


def _pickle_only(model_dir, dest, payload) -> Path:
    folder = variant(model_dir, dest, drop=("*.safetensors",))
    torch.save(payload, folder / "pytorch_model.bin")
    return folder


def _with_file(folder: Path, name: str, content: bytes) -> Path:
    (folder / name).write_bytes(content)
    return folder


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


def _drop(*keys):
    return lambda c: [c.pop(k) for k in keys]


MODEL_CASES = [
    ("folder_missing", lambda d, t, m: t / "nowhere", [], ["nowhere", "model folder not found", "unpact prepare"]),
    ("unknown_model_name", lambda d, t, m: "smollm9-1b", [], ["smollm9-1b", "model folder not found", "name a known one"]),
    ("no_config_json", lambda d, t, m: variant(d, t / "x", drop=("config.json",)), [],
     ["no config.json", "Hugging Face model folder"]),
    ("config_json_not_json", lambda d, t, m: _with_file(variant(d, t / "x"), "config.json", b"{oops"), [],
     ["config.json: not valid JSON", "re-save the model folder"]),
    ("config_json_a_list", lambda d, t, m: _with_file(variant(d, t / "x"), "config.json", b"[1]"), [],
     ["config.json: expected a JSON object", "got list"]),
    ("config_but_no_weights", lambda d, t, m: variant(d, t / "x", drop=("*.safetensors",)), [],
     ["no .safetensors weights", "save_pretrained"]),
    ("pickle_only_checkpoint", lambda d, t, m: _pickle_only(d, t / "x", _state_dict(d)), [],
     ["pytorch_model.bin", "pickle checkpoint", "convert them to safetensors", "--allow-pickle"]),
    ("malicious_pickle", lambda d, t, m: _pickle_only(d, t / "x", {"w": _RunsCode(m)}), [],
     ["pytorch_model.bin", "convert them to safetensors", "--allow-pickle"]),
    ("malicious_pickle_with_allow_pickle", lambda d, t, m: _pickle_only(d, t / "x", {"w": _RunsCode(m)}),
     ["--allow-pickle"], ["pytorch_model.bin", "refused", "references exec", "do not load it"]),
    ("truncated_pickle_with_allow_pickle",
     lambda d, t, m: _with_file(_pickle_only(d, t / "x", None), "pytorch_model.bin", b"\x80\x04garbage"),
     ["--allow-pickle"], ["pytorch_model.bin", "cannot load"]),
    ("non_causal_bert", lambda d, t, m: _bert(t / "bert"), [],
     ["BertForMaskedLM is not a causal language model", "*ForCausalLM"]),
    ("custom_code_without_trust", lambda d, t, m: _custom_code(d, t / "x", "evil", m), [],
     ["config.json", "model_type 'evil'", "evil.py", "--trust-remote-code"]),
    ("unknown_model_type", lambda d, t, m: variant(d, t / "x", config=_set("model_type", "llamaX")), [],
     ["cannot load as a causal LM", "llamaX", "check model_type"]),
    ("corrupt_safetensors", lambda d, t, m: _with_file(variant(d, t / "x"), "model.safetensors", b"junk" * 8), [],
     ["unreadable .safetensors", "fetch the weights again"]),
    ("weights_do_not_match_config", lambda d, t, m: variant(d, t / "x", config=lambda c: c.update(hidden_size=64, head_dim=32)),
     [], ["tensor shapes do not match config.json", "save config and weights together"]),
    ("no_tokenizer_files", lambda d, t, m: variant(d, t / "x", drop=("tokenizer*",)), [],
     ["no tokenizer files", "tokenizer.save_pretrained"]),
    ("tokenizer_without_pad_or_eos", lambda d, t, m: variant(d, t / "x", tokenizer_config=_drop("pad_token", "eos_token")),
     [], ["neither a pad nor an EOS token", "add one to tokenizer_config.json"]),
]


@pytest.mark.parametrize("make, extra, fragments", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_bad_model_folder(capsys, model_dir, tmp_path, make, extra, fragments):
    marker = tmp_path / "code-ran"
    folder = make(model_dir, tmp_path, marker)
    code, _, err = run_cli(capsys, "attribute", "--model", folder, "--prompt", Q, "--answer", A, *extra)
    assert_one_line_error(code, err, *fragments)
    assert not marker.exists(), "code from the model folder ran"


def _contributions(capsys, folder, *extra):
    code, out, err = run_cli(capsys, "attribute", "--model", folder, "--prompt", Q, "--answer", A, "--json", *extra)
    assert code == 0, err
    return [r["contribution"] for r in json.loads(out)]


def test_allow_pickle_loads_plain_tensors(capsys, model_dir, tmp_path):
    from unpact.errors import UnpactError
    from unpact.models import load_model
    from unpact.models.loading import pickle_allowed

    folder = _pickle_only(model_dir, tmp_path / "x", _state_dict(model_dir))
    assert _contributions(capsys, folder, "--allow-pickle") == _contributions(capsys, model_dir)
    # the API: a parameter, and the context `run`/`recover` use for the models a study loads deep inside
    assert load_model(folder, allow_pickle=True)[0].config.hidden_size == 32
    with pickle_allowed():
        load_model(folder)
    with pytest.raises(UnpactError, match="--allow-pickle"):
        load_model(folder)


def test_custom_code_of_a_known_model_type_is_ignored(capsys, model_dir, tmp_path):
    """auto_map beside a model type transformers knows: its own class loads, the folder's code never runs."""
    marker = tmp_path / "code-ran"
    folder = _custom_code(model_dir, tmp_path / "x", "llama", marker)
    assert _contributions(capsys, folder) == _contributions(capsys, model_dir)
    assert not marker.exists()


def test_tokenizer_without_pad_uses_eos(capsys, model_dir, tmp_path):
    from unpact.models import load_model

    folder = variant(model_dir, tmp_path / "x", tokenizer_config=_drop("pad_token"))
    _, tok = load_model(folder)
    assert tok.pad_token_id == tok.eos_token_id is not None
    assert _contributions(capsys, folder) == pytest.approx(_contributions(capsys, model_dir), abs=1e-5)


# -- command-line arguments --------------------------------------------------------------------------

CLI_CASES = [
    ("unlearn_unknown_method", ["unlearn", "--model", "{m}", "--method", "GradAscent", "--out", "{t}/o"],
     ["unknown unlearning method 'GradAscent'", "GA_GDR"]),
    ("set_without_equals", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/o", "--set", "alpha"],
     ["--set 'alpha'", "expected NAME=NUMBER", "--set alpha=2"]),
    ("set_not_a_number", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/o", "--set", "alpha=big"],
     ["--set 'alpha=big'", "expected NAME=NUMBER"]),
    ("set_nan", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/o", "--set", "alpha=nan"],
     ["--set 'alpha=nan'", "finite number"]),
    ("set_unknown_hyper_parameter", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/o",
                                     "--set", "gamma=1"], ["--set gamma: unknown hyper-parameter of GA_GDR", "takes alpha"]),
    ("set_out_of_range", ["unlearn", "--model", "{m}", "--method", "NPO_GDR", "--out", "{t}/o", "--set", "beta=-1"],
     ["--set beta: -1.0 is out of range (0, inf)"]),
    ("set_not_an_integer", ["unlearn", "--model", "{m}", "--method", "RMU", "--out", "{t}/o", "--set", "layer=1.5"],
     ["--set layer: expected an integer, got 1.5"]),
    ("negative_epochs", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/o", "--epochs", "-3"],
     ["--epochs -3", "at least 1 epoch"]),
    ("zero_learning_rate", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/o", "--lr", "0"],
     ["--lr 0.0", "positive learning rate"]),
    ("negative_lora_rank", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/o", "--lora-rank", "-1"],
     ["--lora-rank -1", "positive rank"]),
    ("out_is_a_file", ["unlearn", "--model", "{m}", "--method", "GA_GDR", "--out", "{t}/file.txt"],
     ["--out", "file.txt", "a file is in the way"]),
    ("attribute_alpha_above_1", ["attribute", "--model", "{m}", "--prompt", Q, "--answer", A, "--alpha", "1.5"],
     ["--alpha 1.5", "[0, 1)"]),
    ("attribute_negative_beta", ["attribute", "--model", "{m}", "--prompt", Q, "--answer", A, "--beta", "-1"],
     ["--beta -1", "integer ≥ 0"]),
    ("attribute_zero_steps", ["attribute", "--model", "{m}", "--prompt", Q, "--answer", A, "--steps", "0"],
     ["--steps 0", "at least 1 step"]),
    ("attribute_unknown_method", ["attribute", "--model", "{m}", "--prompt", Q, "--answer", A, "--method", "shap"],
     ["--method 'shap'", "loo"]),
    ("attribute_baseline_id_out_of_vocab", ["attribute", "--model", "{m}", "--prompt", Q, "--answer", A,
                                            "--baseline-id", "99999"], ["--baseline-id 99999", "use 0 to 399"]),
    ("recover_unknown_attack", ["recover", "--original", "{m}", "--model", "{m}", "--attacks", "shouting",
                                "--out", "{t}/r"], ["'shouting'", "choose from sampling"]),
    ("recover_without_data", ["recover", "--original", "{m}", "--model", "{m}", "--attacks", "paraphrase",
                              "--out", "{t}/r"], ["data folder not found", "pass --data"]),
    ("results_not_a_run", ["results", "{t}"], ["metrics.json not found", "unpact run"]),
    ("results_corrupt_metrics", ["results", "{t}/run"], ["metrics.json: not valid JSON", "rerun `unpact run`"]),
    ("models_prepare_unknown", ["models", "--prepare", "llama9"], ["'llama9' is not a known model", "choose from"]),
]


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_arguments(capsys, model_dir, tmp_path, argv, fragments):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text('{"groups": [')
    code, _, err = run_cli(capsys, *(a.format(m=model_dir, t=tmp_path) for a in argv))
    assert_one_line_error(code, err, *fragments)


ARGPARSE_CASES = [
    ("unknown_subcommand", ["unlern"], ["invalid choice: 'unlern'"]),
    ("missing_required_model", ["unlearn", "--method", "GA_GDR", "--out", "o"], ["required", "--model"]),
    ("missing_config_argument", ["run"], ["required", "config"]),
    ("unknown_option", ["unlearn", "--model", "m", "--method", "GA_GDR", "--out", "o", "--learning-rate", "1"],
     ["unrecognized arguments: --learning-rate"]),
    ("epochs_not_an_integer", ["unlearn", "--model", "m", "--method", "GA_GDR", "--out", "o", "--epochs", "ten"],
     ["--epochs", "invalid int value: 'ten'"]),
    ("exclude_unknown_split", ["prepare", "--out", "o", "--exclude", "all"], ["--exclude", "invalid choice: 'all'"]),
]


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in ARGPARSE_CASES], ids=[c[0] for c in ARGPARSE_CASES])
def test_argparse_errors(capsys, argv, fragments):
    code, _, err = run_cli(capsys, *argv)
    assert_argparse_error(code, err, *fragments)
