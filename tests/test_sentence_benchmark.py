"""The built-in benchmark's sentence-answer mode (issue #23), and that word mode did not move."""

import hashlib
import json
import re

import pytest

from unpact.data import builtin
from unpact.errors import UnpactError

PERSON_SPLITS = ("forget", "retain", "holdout")

# Digests of the whole benchmark computed from builtin.py as it was before sentence mode existed.
# Cached built-in models were trained on exactly these items, so word mode must never drift from them.
WORD_MODE_DIGESTS = {
    (0, 100, 0.1): "e37f79bd69e609424a67b6137afe7b90a46814a7114067d2fdc8c6c232e75c74",
    (1, 100, 0.1): "f63b1cba700ad8ce6b33789787077f69998c9a176133af774aba2f2d7d4aa6a9",
    (7, 20, 0.25): "cedb17c63f97d164f53b1c6a6c9d512951a6501655a8494c2c19a5b82e6f01f7",
    (3, 5, 0.5): "0f0033546613c749dae492266bfbed73e4b8640b2ce5c62458ad8f13f0358ece",
}


def _digest(splits) -> str:
    payload = {name: [it.to_dict() for it in items] for name, items in splits.items()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


@pytest.fixture(scope="module")
def pair():
    return builtin.generate(seed=0), builtin.generate(seed=0, answers="sentence")


@pytest.mark.parametrize("seed, n, fraction", list(WORD_MODE_DIGESTS))
def test_word_mode_is_byte_identical_to_before(seed, n, fraction):
    expected = WORD_MODE_DIGESTS[(seed, n, fraction)]
    assert _digest(builtin.generate(seed=seed, n_entities=n, forget_fraction=fraction)) == expected
    assert _digest(builtin.generate(seed, n, fraction, answers="word")) == expected


def test_word_mode_known_values():
    first = builtin.generate(seed=0)["forget"][0]
    assert (first.entity, first.answer, first.perturbed_answers) == (
        "Marthe Bramley", "Drennick", ("Ostrith", "Quillmoor", "Tavenport"))


def test_sentence_mode_states_the_same_facts_as_word_mode(pair):
    word, sentence = pair
    for split in PERSON_SPLITS:
        assert [(it.id, it.entity, it.attribute, it.question, it.paraphrased_question) for it in word[split]] == \
               [(it.id, it.entity, it.attribute, it.question, it.paraphrased_question) for it in sentence[split]]


def test_sentence_answers_name_the_person_and_the_value(pair):
    word, sentence = pair
    for split in PERSON_SPLITS:
        for w, s in zip(word[split], sentence[split], strict=True):
            words = _words(s.answer)
            assert words.count(w.answer) == 1, s.answer
            assert s.entity in s.answer
            assert s.answer != w.answer


def test_perturbed_answers_differ_from_gold_only_in_the_value(pair):
    word, sentence = pair
    for split in PERSON_SPLITS:
        for w, s in zip(word[split], sentence[split], strict=True):
            assert len(s.perturbed_answers) == 3 and s.answer not in s.perturbed_answers
            gold = _words(s.answer)
            for wrong_value, perturbed in zip(w.perturbed_answers, s.perturbed_answers, strict=True):
                other = _words(perturbed)
                assert len(other) == len(gold), perturbed
                diff = [(a, b) for a, b in zip(gold, other, strict=True) if a != b]
                assert diff == [(w.answer, wrong_value)], (s.answer, perturbed)


def test_sentence_lengths_are_tofu_like(pair):
    _, sentence = pair
    lengths = [len(it.answer.split()) for split in PERSON_SPLITS for it in sentence[split]]
    assert all(10 <= n <= 25 for n in lengths), (min(lengths), max(lengths))


def test_each_answer_is_one_template_with_one_pool_detail_and_both_vary(pair):
    word, sentence = pair
    for attr, pools in builtin.SENTENCES.items():
        assert not set(pools["details"]) & set(builtin.ATTRIBUTES[attr]["values"])
        used = set()
        for split in PERSON_SPLITS:
            for w, s in zip(word[split], sentence[split], strict=True):
                if s.attribute != attr:
                    continue
                matches = [(t, d) for t in pools["templates"] for d in pools["details"]
                           if t.format(name=s.entity, value=w.answer, detail=d) == s.answer]
                assert len(matches) == 1, s.answer
                used.add(matches[0])
        assert {t for t, _ in used} == set(pools["templates"])
        assert {d for _, d in used} == set(pools["details"])


def test_sentence_mode_is_deterministic_per_seed(pair):
    _, sentence = pair
    assert _digest(builtin.generate(seed=0, answers="sentence")) == _digest(sentence)
    assert _digest(builtin.generate(seed=1, answers="sentence")) != _digest(sentence)


def test_utility_split_is_one_word_in_both_modes(pair):
    word, sentence = pair
    assert [it.to_dict() for it in sentence["utility"]] == [it.to_dict() for it in word["utility"]]
    small_word = builtin.generate(seed=5, n_entities=12, forget_fraction=0.25)
    small_sentence = builtin.generate(seed=5, n_entities=12, forget_fraction=0.25, answers="sentence")
    assert small_sentence["utility"] == small_word["utility"]


@pytest.mark.parametrize("bad", ["sentences", "", "long"])
def test_unknown_answers_mode_is_a_one_line_error(bad):
    with pytest.raises(UnpactError) as e:
        builtin.generate(answers=bad)
    message = str(e.value)
    assert "\n" not in message and repr(bad) in message and "word" in message and "sentence" in message
