"""Benchmark adapters against real files in their published layouts (tests/fixtures, see SOURCES.md).

Layouts the fixtures lack (TOFU forget01/retain99, MUSE retain_qa, MMLU hub JSON, WMDP) are built in
tmp_path from the same real rows."""

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from unpact.data import builtin
from unpact.data.benchmarks import FORMATS, load_benchmark
from unpact.errors import UnpactError

FIX = Path(__file__).parent / "fixtures"
WORLD = FIX / "tofu" / "world_facts_perturbed.json"
AUTHORS = FIX / "tofu" / "real_authors_perturbed.json"
MMLU_TEST = FIX / "mmlu" / "test" / "abstract_algebra_test.csv"


def jsonl_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def all_items(bench):
    return [it for items in bench.splits.values() for it in items] + bench.icl


def assert_well_formed(bench):
    items = all_items(bench)
    assert len({it.id for it in items}) == len(items)
    for split, split_items in bench.splits.items():
        assert all(it.split == split for it in split_items)
    for it in items:
        assert isinstance(it.question, str) and it.question.strip()
        assert isinstance(it.answer, str) and it.answer.strip()


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


# --- TOFU --------------------------------------------------------------------------------------------

@pytest.fixture
def tofu_dir(tmp_path):
    """TOFU's hub layout from the real world-facts rows: forget01 = first 12 lines, retain99 = the rest."""
    lines = WORLD.read_text(encoding="utf-8").splitlines(keepends=True)
    write_lines(tmp_path / "forget01.json", lines[:12])
    write_lines(tmp_path / "retain99.json", lines[12:])
    shutil.copy(WORLD, tmp_path)
    shutil.copy(AUTHORS, tmp_path)
    return tmp_path


def test_tofu_forget01_derives_retain99_and_default_utility(tofu_dir):
    bench = load_benchmark("tofu", tofu_dir, forget="forget01")
    assert bench.name == "tofu" and bench.source == str(tofu_dir)
    assert [len(bench.splits[s]) for s in ("forget", "retain", "utility")] == [12, 105, 217]
    utility_ids = [it.id for it in bench.splits["utility"]]
    assert sum(i.startswith("tofu-real_authors_perturbed-") for i in utility_ids) == 100
    assert sum(i.startswith("tofu-world_facts_perturbed-") for i in utility_ids) == 117
    assert_well_formed(bench)
    rows = jsonl_rows(WORLD)
    first = bench.splits["forget"][0]
    assert first.id == "tofu-forget01-0001"
    assert (first.question, first.answer) == (rows[0]["question"], rows[0]["answer"]) == (
        "Where would you find the Eiffel Tower?", "Paris")
    assert first.perturbed_answers == ("Berlin", "London", "Madrid")
    retain = bench.splits["retain"][0]
    assert retain.id == "tofu-retain99-0001" and retain.question == rows[12]["question"]
    assert all(len(it.perturbed_answers) == 3 for it in bench.splits["utility"])


def test_tofu_paraphrased_answer_is_not_a_question_paraphrase(tofu_dir):
    rows = jsonl_rows(WORLD)[:12]
    write_lines(tofu_dir / "forget01_perturbed.json",
                [json.dumps({**r, "paraphrased_answer": f"It is {r['answer']}."}) + "\n" for r in rows])
    bench = load_benchmark("tofu", tofu_dir, forget="forget01_perturbed", utility=[])
    assert [it.answer for it in bench.splits["forget"]] == [r["answer"] for r in rows]
    assert all(it.paraphrased_question is None for it in bench.splits["forget"])
    assert len(bench.splits["retain"]) == 105 and bench.splits["utility"] == []


def test_tofu_forget_from_is_seeded_reproducible_and_disjoint():
    def load(seed):
        return load_benchmark("tofu", FIX / "tofu", forget_from="world_facts_perturbed", n_forget=20, seed=seed)

    bench, again, other = load(3), load(3), load(4)
    forget = [it.id for it in bench.splits["forget"]]
    retain = [it.id for it in bench.splits["retain"]]
    assert len(forget) == 20 and len(retain) == 97
    assert forget == [it.id for it in again.splits["forget"]]
    assert forget != [it.id for it in other.splits["forget"]]
    assert not set(forget) & set(retain)
    assert sorted(forget + retain) == [f"tofu-world_facts_perturbed-{n:04d}" for n in range(1, 118)]
    # world facts feed forget and retain, so only real authors is left for utility
    assert {it.id.rsplit("-", 1)[0] for it in bench.splits["utility"]} == {"tofu-real_authors_perturbed"}
    assert len(bench.splits["utility"]) == 100
    assert_well_formed(bench)


def test_tofu_missing_config_names_file_and_configs():
    with pytest.raises(UnpactError, match="forget10.json: TOFU config 'forget10' not found") as e:
        load_benchmark("tofu", FIX / "tofu")
    assert "real_authors_perturbed, world_facts_perturbed" in str(e.value)


def test_tofu_retain_cannot_be_derived_from_other_configs():
    with pytest.raises(UnpactError, match="cannot derive the retain config from forget='world_facts_perturbed'"):
        load_benchmark("tofu", FIX / "tofu", forget="world_facts_perturbed")


def test_tofu_n_forget_out_of_range_names_the_limit():
    with pytest.raises(UnpactError, match=r"n_forget=117 must be an integer from 1 to 116 \(world_facts_perturbed"):
        load_benchmark("tofu", FIX / "tofu", forget_from="world_facts_perturbed", n_forget=117)


# --- MUSE --------------------------------------------------------------------------------------------

@pytest.fixture
def muse_dir(tmp_path):
    """The fixture plus what it lacks, from real rows: retain_qa = the first 50 forget_qa rows, raw texts
    = verbmem passages (a JSON list of strings, a list of {"text"}, and a .txt)."""
    folder = shutil.copytree(FIX / "muse_news", tmp_path / "muse_news")
    qa = json.loads((folder / "knowmem" / "forget_qa.json").read_text(encoding="utf-8"))
    (folder / "knowmem" / "retain_qa.json").write_text(json.dumps(qa[:50]), encoding="utf-8")
    verbmem = json.loads((folder / "verbmem" / "forget.json").read_text(encoding="utf-8"))
    texts = [r["prompt"] + r["gt"] for r in verbmem[:3]]
    (folder / "raw").mkdir()
    (folder / "raw" / "forget.json").write_text(json.dumps(texts[:2]), encoding="utf-8")
    (folder / "raw" / "retain1.json").write_text(json.dumps([{"text": texts[2]}]), encoding="utf-8")
    (folder / "raw" / "holdout.txt").write_text(texts[0], encoding="utf-8")
    return folder


def test_muse_layout_counts_icl_verbmem_raw(muse_dir):
    bench = load_benchmark("muse", muse_dir, name="muse_news")
    assert bench.name == "muse_news"
    assert [len(bench.splits[s]) for s in ("forget", "retain", "utility")] == [100, 50, 0]
    assert len(bench.icl) == 10 and all(it.split == "icl" for it in bench.icl)
    assert_well_formed(bench)
    qa = json.loads((FIX / "muse_news" / "knowmem" / "forget_qa.json").read_text(encoding="utf-8"))
    first = bench.splits["forget"][0]
    assert first.id == "muse-forget_qa-0001"
    assert (first.question, first.answer) == (qa[0]["question"], qa[0]["answer"]) == (
        "What year did the Orkney Islands become part of Scotland?", "1472")
    assert bench.splits["retain"][49].id == "muse-retain_qa-0050"
    assert bench.icl[0].id == "muse-forget_qa_icl-0001" and bench.icl[0].answer == "£55,000"
    verbmem = json.loads((FIX / "muse_news" / "verbmem" / "forget.json").read_text(encoding="utf-8"))
    assert len(bench.verbmem) == 100 and bench.verbmem[0] == (verbmem[0]["prompt"], verbmem[0]["gt"])
    texts = [r["prompt"] + r["gt"] for r in verbmem[:3]]
    assert bench.raw == {"forget": texts[:2], "retain1": [texts[2]], "holdout": [texts[0]]}


def test_muse_accepts_the_older_retain2_qa_name(muse_dir):
    (muse_dir / "knowmem" / "retain_qa.json").rename(muse_dir / "knowmem" / "retain2_qa.json")
    bench = load_benchmark("muse", muse_dir)
    assert len(bench.splits["retain"]) == 50 and bench.splits["retain"][0].id == "muse-retain2_qa-0001"


def test_muse_without_retain_qa_names_what_is_missing():
    with pytest.raises(UnpactError, match="retain_qa.json: MUSE retain set .* not found") as e:
        load_benchmark("muse", FIX / "muse_news")
    assert "the folder has: forget_qa.json, forget_qa_icl.json" in str(e.value)


def test_muse_bad_verbmem_row_names_file_and_row(muse_dir):
    path = muse_dir / "verbmem" / "forget.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    rows[4] = {"prompt": rows[4]["prompt"]}
    path.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(UnpactError, match=f"{path}:5: expected an object with non-empty 'prompt' and 'gt'"):
        load_benchmark("muse", muse_dir)


# --- MMLU / WMDP ---------------------------------------------------------------------------------------

def hub_form(rows, subject=None):
    """A CSV row in the hub form, as SOURCES.md maps it: choices = row[1:5], answer = "ABCD".index(row[5])."""
    return [{"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5]),
             **({"subject": subject} if subject else {})} for r in rows]


def test_mmlu_csv_layout_defaults():
    bench = load_benchmark("mmlu", FIX / "mmlu")
    assert [len(bench.splits[s]) for s in ("forget", "retain", "utility")] == [100, 5, 0]
    assert_well_formed(bench)
    for it, row in zip(bench.splits["forget"], csv_rows(MMLU_TEST), strict=True):
        assert it.question == f"{row[0]}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}"
        assert it.answer == row[5] and it.answer in "ABCD"
        assert sorted(it.perturbed_answers + (it.answer,)) == ["A", "B", "C", "D"]
        assert it.entity == "abstract_algebra"
    second = bench.splits["forget"][1]
    assert second.id == "mmlu-test-abstract_algebra-0002" and second.answer == "C"
    assert second.question.endswith("\nA. 8\nB. 2\nC. 24\nD. 120")
    assert bench.splits["retain"][0].id == "mmlu-dev-abstract_algebra-0001"


def test_mmlu_options_take_splits_subjects_and_skip_what_is_taken():
    by_subject = load_benchmark("mmlu", FIX / "mmlu", forget=["abstract_algebra"], retain="dev", utility="test")
    assert [len(by_subject.splits[s]) for s in ("forget", "retain", "utility")] == [100, 5, 0]
    swapped = load_benchmark("mmlu", FIX / "mmlu", forget="dev", retain=[], utility="abstract_algebra")
    assert [len(swapped.splits[s]) for s in ("forget", "retain", "utility")] == [5, 0, 100]
    assert swapped.splits["utility"][0].split == "utility"


def test_mmlu_unknown_subject_lists_splits_and_subjects():
    with pytest.raises(UnpactError, match=r"option forget='virology' is neither a split \(dev, test\) "
                                          r"nor a test subject \(abstract_algebra\)"):
        load_benchmark("mmlu", FIX / "mmlu", forget=["virology"])


def test_mmlu_hub_json_gives_the_same_items_as_csv(tmp_path):
    write_lines(tmp_path / "test" / "abstract_algebra.json",
                [json.dumps(r) + "\n" for r in hub_form(csv_rows(MMLU_TEST), "abstract_algebra")])
    dev = hub_form(csv_rows(FIX / "mmlu" / "dev" / "abstract_algebra_dev.csv"), "abstract_algebra")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "abstract_algebra.json").write_text(json.dumps(dev), encoding="utf-8")  # a JSON list
    assert load_benchmark("mmlu", tmp_path).splits == load_benchmark("mmlu", FIX / "mmlu").splits


@pytest.mark.parametrize("edit, message", [
    (lambda row: row[:5], "expected 6 columns (question, A, B, C, D, answer letter), got 5"),
    (lambda row: row[:5] + ["E"], "answer letter 'E' is not one of A, B, C, D"),
])
def test_mmlu_bad_csv_row_names_file_and_line(tmp_path, edit, message):
    shutil.copytree(FIX / "mmlu", tmp_path / "mmlu")
    path = tmp_path / "mmlu" / "test" / "abstract_algebra_test.csv"
    rows = csv_rows(MMLU_TEST)
    rows[2] = edit(rows[2])
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(UnpactError, match=f"{path}:3: {message}".replace("(", r"\(").replace(")", r"\)")):
        load_benchmark("mmlu", tmp_path / "mmlu")


def test_mmlu_bad_hub_answer_names_file_and_row(tmp_path):
    rows = hub_form(csv_rows(MMLU_TEST))
    rows[6]["answer"] = 4
    write_lines(tmp_path / "test" / "abstract_algebra.jsonl", [json.dumps(r) + "\n" for r in rows])
    with pytest.raises(UnpactError, match=r"abstract_algebra.jsonl:7: 'answer' must be 0..3 \(or a letter A-D\), got 4"):
        load_benchmark("mmlu", tmp_path)


@pytest.fixture
def wmdp_dir(tmp_path):
    """WMDP's hub layout (test/wmdp-bio.json, fields question/choices/answer) from the real MMLU rows."""
    rows = csv_rows(MMLU_TEST)
    write_lines(tmp_path / "test" / "wmdp-bio.json", [json.dumps(r) + "\n" for r in hub_form(rows)])
    write_lines(tmp_path / "corpora" / "bio-retain-corpus.jsonl", [json.dumps({"text": r[0]}) + "\n" for r in rows[:3]])
    return tmp_path


def test_wmdp_forget_is_wmdp_and_retain_utility_come_from_mmlu(wmdp_dir):
    bench = load_benchmark("wmdp", wmdp_dir, mmlu=FIX / "mmlu")
    assert [len(bench.splits[s]) for s in ("forget", "retain", "utility")] == [100, 5, 100]
    assert_well_formed(bench)
    first = bench.splits["forget"][0]
    assert first.id == "wmdp-test-wmdp-bio-0001" and first.entity == "wmdp-bio" and first.answer == "B"
    assert first.question == ("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q."
                              "\nA. 0\nB. 4\nC. 2\nD. 6")
    assert bench.splits["utility"][0].id == "mmlu-test-abstract_algebra-0001"
    assert bench.raw == {"bio-retain-corpus": [r[0] for r in csv_rows(MMLU_TEST)[:3]]}


def test_wmdp_files_at_top_level_and_without_mmlu(wmdp_dir):
    (wmdp_dir / "test" / "wmdp-bio.json").rename(wmdp_dir / "wmdp-bio.json")
    (wmdp_dir / "test").rmdir()
    bench = load_benchmark("wmdp", wmdp_dir)
    assert [len(bench.splits[s]) for s in ("forget", "retain", "utility")] == [100, 0, 0]
    with pytest.raises(UnpactError, match="options retain/utility select MMLU items; pass mmlu="):
        load_benchmark("wmdp", wmdp_dir, retain="dev")


# --- unpact's JSON Lines ---------------------------------------------------------------------------------

def test_jsonl_own_schema_round_trips(benchmark, tmp_path):
    builtin.save(benchmark, tmp_path)
    bench = load_benchmark("jsonl", tmp_path)
    assert bench.splits == {s: benchmark[s] for s in ("forget", "retain", "utility")}
    assert len(bench.splits["utility"]) >= 50


def test_jsonl_plain_question_answer_rows_get_ids(tmp_path):
    rows = [{"question": r["question"], "answer": r["answer"]} for r in jsonl_rows(WORLD)]
    write_lines(tmp_path / "forget.jsonl", [json.dumps(r) + "\n" for r in rows[:17]])
    write_lines(tmp_path / "retain.jsonl", [json.dumps(r) + "\n" for r in rows[17:]])
    bench = load_benchmark("jsonl", tmp_path)
    assert [len(bench.splits[s]) for s in ("forget", "retain", "utility")] == [17, 100, 0]
    assert bench.splits["forget"][0].id == "forget-0001" and bench.splits["retain"][99].id == "retain-0100"
    assert bench.splits["forget"][0].answer == "Paris"
    assert_well_formed(bench)


def test_jsonl_same_id_in_two_files_is_rejected(tmp_path):
    row = json.dumps({"id": "q1", "question": "What is the capital of Australia?", "answer": "Canberra"}) + "\n"
    write_lines(tmp_path / "forget.jsonl", [row])
    write_lines(tmp_path / "retain.jsonl", [row])
    with pytest.raises(UnpactError, match="duplicate id 'q1' in forget and retain"):
        load_benchmark("jsonl", tmp_path)


def test_jsonl_missing_retain_file(tmp_path):
    write_lines(tmp_path / "forget.jsonl", ['{"question": "Q?", "answer": "A"}\n'])
    with pytest.raises(UnpactError, match="retain.jsonl: retain file not found; the folder has: forget.jsonl"):
        load_benchmark("jsonl", tmp_path)


# --- the registry --------------------------------------------------------------------------------------

def test_unknown_format_lists_formats():
    with pytest.raises(UnpactError, match="unknown benchmark format 'tofu2'; formats are: jsonl, tofu, muse, mmlu, wmdp"):
        load_benchmark("tofu2", FIX / "tofu")
    assert set(FORMATS) == {"jsonl", "tofu", "muse", "mmlu", "wmdp"}


def test_unknown_option_lists_the_formats_options():
    with pytest.raises(UnpactError, match="tofu: unknown option 'n_retain'; options are: forget, retain, utility, "
                                          "forget_from, n_forget, seed"):
        load_benchmark("tofu", FIX / "tofu", n_retain=3)


def test_missing_folder(tmp_path):
    with pytest.raises(UnpactError, match="nope: benchmark folder not found; pass a folder in the muse layout"):
        load_benchmark("muse", tmp_path / "nope")


def test_hub_id_without_datasets_says_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("UNPACT_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    message = ("locuslab/TOFU: not found locally and cannot download (offline or `datasets` not installed); "
               "download the files into a folder in the published layout and pass its path")
    with pytest.raises(UnpactError) as e:
        load_benchmark("tofu", "hf://locuslab/TOFU")
    assert str(e.value) == message
    with pytest.raises(UnpactError, match="cannot download"):
        load_benchmark("muse", "muse-bench/MUSE-News", hub=True)
