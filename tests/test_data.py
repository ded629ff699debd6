import json

import pytest

from unpact.data import builtin, load_items
from unpact.data.rewrites import EMPHASIS_STYLES, heuristic_keywords
from unpact.errors import UnpactError


def test_generator_is_deterministic_and_sized(benchmark):
    again = builtin.generate(seed=0)
    assert [it.to_dict() for s in again.values() for it in s] == [it.to_dict() for s in benchmark.values() for it in s]
    other = builtin.generate(seed=1)
    assert other["forget"][0].to_dict() != benchmark["forget"][0].to_dict()
    entities = {it.entity for s in ("forget", "retain") for it in benchmark[s]}
    assert len(entities) >= 100
    forget_entities = {it.entity for it in benchmark["forget"]}
    assert len(forget_entities) == 10 and not forget_entities & {it.entity for it in benchmark["retain"]}
    assert len(benchmark["utility"]) >= 50
    for it in benchmark["forget"] + benchmark["utility"]:
        assert it.paraphrased_question and it.paraphrased_question != it.question
        assert len(it.perturbed_answers) == 3 and it.answer not in it.perturbed_answers


def test_jsonl_round_trip(benchmark, tmp_path):
    paths = builtin.save(benchmark, tmp_path)
    assert load_items(paths["forget"]) == benchmark["forget"]


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "question": "Q?"}', "missing field 'answer'"),
    ('{"id": "a", "question": "Q?", "answer": "  "}', "field 'answer' is empty"),
    ('{"id": "a", "question": "Q?", "answer": 3}', "field 'answer' must be a string"),
    ('{"id": "a", "question": "Q?", "answer": "x"', "invalid JSON"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_data_lines_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "ok", "question": "Q?", "answer": "A"}) + "\n" + line + "\n")
    with pytest.raises(UnpactError, match=message) as e:
        load_items(path)
    assert f"{path}:2" in str(e.value)


def test_duplicate_ids_and_missing_file(tmp_path):
    path = tmp_path / "dup.jsonl"
    row = json.dumps({"id": "x", "question": "Q?", "answer": "A"})
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(UnpactError, match="duplicate id 'x'"):
        load_items(path)
    with pytest.raises(UnpactError, match="not found"):
        load_items(tmp_path / "nope.jsonl")


def test_rewrites_keep_the_question_and_name_the_keywords():
    q = "Where was Marthe Bramley born?"
    kw = heuristic_keywords(q)
    assert kw[:2] == ["Marthe", "Bramley"]
    for name, style in EMPHASIS_STYLES.items():
        out = style(q, ["Bramley"])
        assert "Bramley" in out and out != q, name
    assert EMPHASIS_STYLES["mark"](q, ["Bramley"]) == "Where was Marthe *Bramley* born?"


def test_lowest_contribution_placebo_words():
    from unpact.recovery import lowest_contribution_words

    q = "Where was Marthe Bramley born?"
    offsets = [(0, 5), (5, 9), (9, 16), (16, 24), (24, 29), (29, 30)]  # Where| was| Marthe| Bramley| born|?
    assert lowest_contribution_words(q, offsets, [0.5, -0.3, 2.0, 1.5, 0.1, 0.2], 2) == ["was", "born"]
    assert lowest_contribution_words(q, offsets, [0.5, -0.3, 2.0, 1.5, 0.1, 0.0], 0) == ["was"]


def test_holdout_people_are_new_and_leave_the_other_splits_unchanged(benchmark):
    from unpact.data import SPLITS

    holdout = benchmark["holdout"]
    assert len(holdout) == len(benchmark["forget"]) == 40 and all(it.split == "holdout" for it in holdout)
    seen = {it.entity for s in SPLITS for it in benchmark[s]}
    assert not {it.entity for it in holdout} & seen
    # the generator drew the holdout last: the trained splits are what they were before it existed
    assert benchmark["forget"][0].to_dict()["answer"] == "Drennick"
    assert [it.id for it in benchmark["retain"][-2:]] == ["retain-099-pet", "retain-099-instrument"]
