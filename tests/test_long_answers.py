"""Long (sentence) answers: generation lengths from the data, whole-answer judging, every prompt's
length checked before any training, and a study on the built-in benchmark's sentence answers."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml

from unpact.cli import main
from unpact.config import (
    DataConfig,
    EvaluationConfig,
    GenerationConfig,
    RecoveryConfig,
    StudyConfig,
    load_config,
    validate,
)
from unpact.data import SPLITS, builtin
from unpact.errors import UnpactError
from unpact.evaluation import correctness, is_correct
from unpact.models import PlainFormat
from unpact.models.builtin import BuiltinModelConfig, builtin_tokenizer, train_builtin
from unpact.study import Study
from unpact.study.lengths import answer_budgets, needs
from unpact.unlearn import UnlearnConfig

GOLD = "Marthe Bramley was born in Ashgrove, a quiet town known for its quarries, and grew up there."
WRONG = tuple(GOLD.replace("Ashgrove", v) for v in ("Mirecrest", "Elderholm", "Velmora"))


@pytest.fixture(scope="module")
def sentences():
    return builtin.generate(n_entities=12, forget_fraction=0.25, answers="sentence")


@pytest.fixture(scope="module")
def sentence_fmt(sentences):
    return PlainFormat(builtin_tokenizer([it for s in SPLITS for it in sentences[s]], BuiltinModelConfig()))


# -- judging whole answers ---------------------------------------------------------------------------


def test_a_sentence_with_the_wrong_fact_is_wrong_although_most_words_match():
    other = GOLD.replace("Ashgrove", "Tavenport")  # a value that is not among the perturbed answers
    assert is_correct(other, GOLD)  # recall alone: 15 of 16 words, far above the threshold
    assert not is_correct(other, GOLD, wrong=WRONG)  # as close to each wrong answer as to the gold
    assert not is_correct(WRONG[0], GOLD, wrong=WRONG)
    assert is_correct(GOLD, GOLD, wrong=WRONG)
    assert is_correct(GOLD.replace(", and grew up there", ""), GOLD, wrong=WRONG)  # the fact, less detail
    # one-word answers: a reply naming the gold and a wrong candidate knows neither
    assert correctness(["Ashgrove", "Ashgrove or Velmora", "Velmora"], ["Ashgrove"] * 3,
                       wrong=[("Velmora",)] * 3).tolist() == [True, False, False]
    assert is_correct("Ashgrove", "Ashgrove", wrong=("ashgrove",))  # a wrong answer equal to the gold is ignored


# -- generation lengths ------------------------------------------------------------------------------


def test_answer_budgets_are_the_longest_gold_answer_plus_the_margin_per_split(sentences, sentence_fmt):
    longest = {s: max(len(sentence_fmt.encode_answer(it.answer, eos=True)) for it in sentences[s]) for s in SPLITS}
    assert longest["forget"] > 16 and longest["utility"] < 8  # sentences against one-word utility answers
    budgets = answer_budgets(sentence_fmt, sentences, GenerationConfig(margin=5))
    assert budgets == {s: longest[s] + 5 for s in SPLITS}
    fixed = answer_budgets(sentence_fmt, sentences, GenerationConfig(margin=5, max_new_tokens={"retain": 64}))
    assert fixed == {**budgets, "retain": 64}


@pytest.mark.parametrize(("key", "value", "says"), [
    ("margin", -1, "generation.margin"),
    ("max_new_tokens", {"forgot": 10}, "generation.max_new_tokens.forgot"),
    ("max_new_tokens", {"forget": 0}, "generation.max_new_tokens.forget"),
])
def test_bad_generation_settings_are_refused_at_load_time(tmp_path, key, value, says):
    path = tmp_path / "study.yaml"

    path.write_text(yaml.safe_dump({"name": "x", "generation": {key: value}}))
    with pytest.raises(UnpactError, match=says.replace(".", r"\.")):
        load_config(path)


def test_built_in_accuracy_is_judged_on_whole_answers_and_a_shortfall_says_why(sentences, sentence_fmt, tmp_path):
    items = [it for s in SPLITS for it in sentences[s]]
    budget = max(len(sentence_fmt.encode_answer(it.answer, eos=True)) for it in items) + 8
    cfg = BuiltinModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, max_epochs=1)
    with pytest.raises(UnpactError) as e:
        train_builtin(items, tmp_path / "m", cfg)
    message = str(e.value)
    assert "\n" not in message and f"generation length of {budget} tokens" in message
    assert "ran to the generation length" in message or "has not learnt every fact" in message


# -- lengths checked before any training ---------------------------------------------------------------


def _sentence_study(tmp_path, **changes) -> StudyConfig:
    cfg = StudyConfig(data=DataConfig(n_entities=12, forget_fraction=0.25, answers="sentence"),
                      methods=[UnlearnConfig(method="NPO_GDR", lr=5e-4, epochs=1)],
                      evaluation=EvaluationConfig(gold_model=False))
    return validate(dataclasses.replace(cfg, **changes))


@pytest.mark.parametrize(("recovery", "data", "attack", "advice"), [
    (RecoveryConfig(attacks=["few_shot"]), "sentence", "few_shot prompt", "recovery.few_shot_k"),
    (RecoveryConfig(attacks=["repeat"], repeat_times=8), "sentence", "repeat prompt", "recovery.repeat_times"),
    (RecoveryConfig(attacks=[], styles=["repeat_question"]), "word", "focus_on_key prompt", "recovery.styles"),
])
def test_a_prompt_past_the_context_is_refused_before_training_naming_item_split_and_attack(
        tmp_path, recovery, data, attack, advice):
    cfg = _sentence_study(tmp_path, recovery=recovery, data=DataConfig(n_entities=12, forget_fraction=0.25, answers=data))
    study = Study(cfg, tmp_path / "run")
    # the context just short of the attack's longest prompt: everything else fits
    fmt = PlainFormat(builtin_tokenizer([it for s in SPLITS for it in builtin.generate(**dataclasses.asdict(cfg.data))[s]],
                                        cfg.model))
    every = list(needs(fmt, cfg, builtin.generate(**dataclasses.asdict(cfg.data)), attacked=("forget", "retain")))
    longest = max(every, key=lambda n: n.tokens)
    assert longest.use == attack
    cfg.model = dataclasses.replace(cfg.model, max_positions=longest.tokens - 1)
    with pytest.raises(UnpactError) as e:
        study.run()
    message = str(e.value)
    assert "\n" not in message
    assert f"{attack} of {longest.split} item {longest.item!r} is {longest.tokens} tokens" in message
    assert f"past the built-in model's context of {longest.tokens - 1}" in message
    assert advice in message and "model.max_positions" in message
    assert not (tmp_path / "run" / "model").exists()  # refused before any training


def test_dry_run_refuses_the_same_prompt(tmp_path):

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "long", "models": [{"name": "builtin", "builtin": {"max_positions": 64}}],
        "benchmarks": [{"name": "sentences", "builtin": {"n_entities": 12, "forget_fraction": 0.25,
                                                         "answers": "sentence"}}],
        "recovery": {"attacks": ["few_shot"]}}))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    assert not (tmp_path / "run" / "groups").exists() or not any((tmp_path / "run" / "groups").rglob("*.safetensors"))


def test_the_built_in_context_is_sized_to_the_longest_prompt_unless_set(tmp_path):
    cfg = _sentence_study(tmp_path, recovery=RecoveryConfig(attacks=["few_shot"], few_shot_k=8))
    study = Study(cfg, tmp_path / "run")
    study.splits = builtin.generate(**dataclasses.asdict(cfg.data))
    study.gold_dir = None
    study.check_lengths(builtin_model=True)
    fmt = PlainFormat(builtin_tokenizer([it for s in SPLITS for it in study.splits[s]], cfg.model))
    longest = max(n.tokens for n in needs(fmt, cfg, study.splits, attacked=("forget", "retain")))
    assert longest > 256 and study.cfg.model.max_positions == 512
    assert study.budgets["forget"] > 16  # and the answers get room for their sentences
    demo = Study(StudyConfig(), tmp_path / "demo")
    demo.splits = builtin.generate()
    demo.check_lengths(builtin_model=True)
    assert demo.cfg.model.max_positions == 128  # the demo's model keeps its context (and its key)


# -- a study on sentence answers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentence_study(tmp_path_factory):
    """A small study on the built-in benchmark's sentence answers: (run dir, metrics)."""
    out = tmp_path_factory.mktemp("sentences")
    cfg = validate(StudyConfig(
        data=DataConfig(n_entities=12, forget_fraction=0.25, answers="sentence"),
        model=BuiltinModelConfig(max_epochs=30),
        methods=[UnlearnConfig(method="GA_GDR", lr=2e-4, epochs=15, hparams={"alpha": 3.0}),
                 UnlearnConfig(method="NPO_GDR", lr=5e-4, epochs=12, hparams={"alpha": 5.0})],
        recovery=RecoveryConfig(attacks=["paraphrase", "few_shot"]),
        evaluation=EvaluationConfig(gold_model=False)))
    return out, Study(cfg, out).run()


def test_the_original_model_answers_its_sentence_facts_whole(sentence_study):
    out, metrics = sentence_study
    assert min(metrics["base"]["accuracy"][s] for s in SPLITS) >= 0.95
    base = metrics["base"]["standard"]["tofu"]["forget"]
    assert base["probability"] > 0.5 and base["rouge_l_recall"] > 0.95

    config = json.loads((out / "model" / "config.json").read_text())
    assert config["max_position_embeddings"] == 256  # sized for three sentence demonstrations


def test_forget_efficacy_agrees_with_tofu_forget_probability(sentence_study):
    out, metrics = sentence_study
    for name, m in metrics["methods"].items():
        probability = m["standard"]["tofu"]["forget"]["probability"]
        if probability > 0.5:
            assert m["forget_efficacy"] < 1.0, name
        if m["forget_efficacy"] == 1.0:
            assert probability < 0.5, name

    # answer by answer: one judged right is one the model gives the gold sentence good odds for (a
    # lenient judge would pass template sentences with the wrong fact, whatever their probability). Not
    # every one: a degenerate reply can hold the right value by chance (seen: NPO_GDR answering a forget
    # pet question with a retain person's sentence that has the same pet), which the judge rightly counts.
    odds = []
    for name in metrics["methods"]:
        result = json.loads((out / "methods" / name / "result.json").read_text())
        for split in ("forget", "retain"):
            a = result["answers"][split]
            odds += [math.exp(sum(lps) / len(lps)) for lps, ok in zip(a["token_logprobs"], a["correct"], strict=True)
                     if ok]
    assert len(odds) >= 20 and sum(p > 0.5 for p in odds) >= 0.9 * len(odds), sorted(odds)[:5]
