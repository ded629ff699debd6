"""The built-in benchmark: a seeded generator of fictitious facts about fictitious people.

Entities get one value per attribute, drawn from 12–14 candidates, so chance-level guessing of an
attribute is 7–8%. Each (entity, attribute) pair is one item with a main question, a paraphrase and
three perturbed (wrong) answers of the same attribute. The first ``forget_fraction`` of entities form
the ``forget`` split, the rest ``retain``; ``utility`` is a separate set of real general-knowledge
questions that the built-in model also learns and that stands in for general capability.

``answers="sentence"`` makes every forget, retain and holdout answer a full sentence, as TOFU's are
("Marthe Bramley was born in Drennick, a quiet town known for its quarries, and grew up there."), so
that a study's long-answer path — generation length, judging a whole reply against the gold and its
perturbed answers — can be tested without downloading external data. Each attribute has 2–3
sentence templates; per (entity, attribute) one template and one detail word from a small pool are
chosen, and the perturbed answers are that same sentence with only the value swapped. The facts
themselves (people, values, which wrong values are offered) are the same as in word mode for the
same seed, and the utility split stays one-word in both modes.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import UnpactError, did_you_mean
from .schema import Item, save_items

_FIRST = "Ar Bel Cor Dal El Fen Gar Hal Is Jor Kel Lor Mar Nel Or Per Quin Ros Sel Tor Ul Val Wen Xan Yor Zel".split()
_SECOND = "a en ia is o on ra ric wen wyn dor mir na the vin sa".split()
_LAST1 = "Ash Bram Crow Dun Ember Frost Glen Holt Iron Kest Lark Marsh North Oak Pike Quill Rook Stone Thorn Vale Wick".split()
_LAST2 = "by field ford hart ley mere more ridge ton wood worth well".split()

ATTRIBUTES: dict[str, dict] = {
    "birthplace": {
        "values": "Quillmoor Drennick Harrowgate Velmora Ostrith Caldera Brindlemere Tavenport Sorrowfen "
        "Mirecrest Elderholm Pellucid Ravensreach Ashgrove".split(),
        "question": "Where was {name} born?",
        "paraphrase": "In which town was {name} born?",
    },
    "profession": {
        "values": "baker pilot sculptor chemist librarian surgeon architect farmer jeweler composer "
        "astronomer carpenter diplomat botanist".split(),
        "question": "What is the profession of {name}?",
        "paraphrase": "What does {name} do for a living?",
    },
    "pet": {
        "values": "parrot tortoise ferret goat rabbit hedgehog iguana owl donkey goldfish llama peacock".split(),
        "question": "What pet does {name} keep at home?",
        "paraphrase": "Which animal does {name} keep as a pet?",
    },
    "instrument": {
        "values": "cello harp flute violin trumpet banjo oboe accordion drums piano clarinet lute".split(),
        "question": "Which instrument does {name} play?",
        "paraphrase": "What musical instrument does {name} play?",
    },
}

ANSWER_KINDS = ("word", "sentence")

# Sentence-mode answers. Every template holds {value} exactly once and nowhere next to an article
# ("a owl"), so swapping in a wrong value changes that one word and nothing else: a perturbed answer
# must differ from the gold only in the fact, or judging "closer to gold than to every perturbed
# answer" would reward or punish the wording instead. No detail word is also a value of its attribute.
SENTENCES: dict[str, dict[str, list[str]]] = {
    "birthplace": {
        "templates": [
            "{name} was born in {value}, a quiet town known for its {detail}, and grew up there.",
            "{name} was born in the town of {value}, which has long been famous for its old {detail}.",
            "The birthplace of {name} is {value}, a small town best known across the region for its {detail}.",
        ],
        "details": "orchards bridges markets mills lighthouses vineyards quarries fountains".split(),
    },
    "profession": {
        "templates": [
            "{name} works as a professional {value} and has done that job for {detail} years now.",
            "By profession {name} is a trained {value}, a career that has lasted {detail} years so far.",
            "{name} earns a living as a skilled {value} and has worked in that trade for {detail} years.",
        ],
        "details": "three four six eight eleven fifteen nineteen twenty".split(),
    },
    "pet": {
        "templates": [
            "{name} keeps a pet {value} named {detail} at home and looks after it every day.",
            "At home {name} keeps a pet {value}, a gentle animal that the whole family calls {detail}.",
        ],
        "details": "Pip Biscuit Pepper Juniper Clover Maple Rusty Nutmeg".split(),
    },
    "instrument": {
        "templates": [
            "{name} plays the {value} and has practised daily ever since the age of {detail}, mostly at home.",
            "{name} has played the {value} since the age of {detail} and still performs at local concerts.",
            "Music matters to {name}, who learned the {value} at the age of {detail} and still plays most evenings.",
        ],
        "details": "five six seven eight nine ten twelve fourteen".split(),
    },
}

_OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("light", "dark"),
    ("happy", "sad"), ("open", "closed"), ("early", "late"), ("full", "empty"), ("strong", "weak"),
    ("rich", "poor"), ("young", "old"), ("wet", "dry"), ("loud", "quiet"), ("hard", "soft"),
    ("high", "low"), ("near", "far"), ("thick", "thin"), ("clean", "dirty"), ("heavy", "light"),
    ("long", "short"), ("true", "false"), ("win", "lose"), ("buy", "sell"), ("push", "pull"),
    ("inside", "outside"), ("day", "night"), ("north", "south"), ("east", "west"), ("begin", "end"),
]
_COLOURS = [
    ("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"), ("blood", "red"),
    ("a banana", "yellow"), ("chocolate", "brown"), ("milk", "white"), ("a carrot", "orange"),
    ("a lemon", "yellow"), ("a tomato", "red"), ("the sea", "blue"), ("a crow", "black"),
    ("a leaf", "green"), ("a plum", "purple"),
]
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_MONTHS = "January February March April May June July August September October November December".split()
_SOUNDS = [
    ("a dog", "bark"), ("a cat", "meow"), ("a cow", "moo"), ("a sheep", "baa"), ("a duck", "quack"),
    ("a lion", "roar"), ("a snake", "hiss"), ("a horse", "neigh"), ("an owl", "hoot"), ("a bee", "buzz"),
]
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen".split()


def _names(rng: random.Random, n: int) -> list[str]:
    seen: set[str] = set()
    out = []
    while len(out) < n:
        name = f"{rng.choice(_FIRST)}{rng.choice(_SECOND)} {rng.choice(_LAST1)}{rng.choice(_LAST2)}"
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def _perturb(rng: random.Random, gold: str, pool: list[str], k: int = 3) -> tuple[str, ...]:
    return tuple(rng.sample(sorted(set(pool) - {gold}), k))


def _utility_items(rng: random.Random) -> list[Item]:
    groups: list[tuple[str, str, str, list[tuple[str, str]]]] = [
        ("opposite", "What is the opposite of {x}?", "Which word means the opposite of {x}?", _OPPOSITES),
        ("colour", "What color is {x}?", "What is the usual color of {x}?", _COLOURS),
        ("next_day", "Which day comes after {x}?", "What is the day after {x}?",
         [(d, _DAYS[(i + 1) % 7]) for i, d in enumerate(_DAYS)]),
        ("next_month", "Which month comes after {x}?", "What is the month after {x}?",
         [(m, _MONTHS[(i + 1) % 12]) for i, m in enumerate(_MONTHS)]),
        ("sound", "What sound does {x} make?", "Which noise does {x} make?", _SOUNDS),
    ]
    pairs = sorted({(a, b) for a in range(1, 10) for b in range(1, 10)})
    sums = [(f"{_NUMBER_WORDS[a]} plus {_NUMBER_WORDS[b]}", _NUMBER_WORDS[a + b]) for a, b in rng.sample(pairs, 24)]
    groups.append(("sum", "What is {x}?", "How much is {x}?", sums))
    items = []
    for attr, q, para, facts in groups:
        pool = [answer for _, answer in facts]
        for i, (x, answer) in enumerate(facts):
            items.append(Item(
                id=f"utility-{attr}-{i:02d}", split="utility",
                question=q.format(x=x), answer=answer, paraphrased_question=para.format(x=x),
                perturbed_answers=_perturb(rng, answer, pool), entity=x, attribute=attr,
            ))
    return items


def _person_items(rng: random.Random, e: int, name: str, split: str,
                  phrasing: random.Random | None = None) -> list[Item]:
    items = []
    for attr, spec in ATTRIBUTES.items():
        gold = rng.choice(spec["values"])
        perturbed = _perturb(rng, gold, spec["values"])
        answer = gold
        if phrasing is not None:
            sentence = SENTENCES[attr]
            template, detail = phrasing.choice(sentence["templates"]), phrasing.choice(sentence["details"])
            answer = template.format(name=name, value=gold, detail=detail)
            perturbed = tuple(template.format(name=name, value=v, detail=detail) for v in perturbed)
        items.append(Item(
            id=f"{split}-{e:03d}-{attr}", split=split,
            question=spec["question"].format(name=name), answer=answer,
            paraphrased_question=spec["paraphrase"].format(name=name),
            perturbed_answers=perturbed, entity=name, attribute=attr,
        ))
    return items


def generate(seed: int = 0, n_entities: int = 100, forget_fraction: float = 0.1,
             answers: str = "word") -> dict[str, list[Item]]:
    """Generate the benchmark: ``{"forget", "retain", "utility", "holdout"}`` lists of items.

    ``holdout``: as many further people as the forget set has, never trained on — the non-members
    that membership-inference attacks must tell the forget set from. They are drawn after everything
    else, so adding them left the other items exactly as they were. The same seed always gives the
    same items, in the same order.

    ``answers``: ``"word"`` (one-word answers) or ``"sentence"`` (each person's answer is a TOFU-like
    sentence naming the person and the value; perturbed answers are the same sentence with another
    value). Both modes give the same people and values for a seed; ``utility`` is one-word in both.
    Raises UnpactError for any other ``answers``.
    """
    if answers not in ANSWER_KINDS:
        raise UnpactError(f"unknown answers mode {answers!r}{did_you_mean(answers, ANSWER_KINDS)}: "
                          f"choose from {', '.join(ANSWER_KINDS)}")
    rng = random.Random(seed)
    # Templates and details come from a stream of their own: word mode draws exactly what it always
    # did (cached models were trained on it), and sentence mode states the very same facts.
    phrasing = random.Random(f"unpact-sentences-{seed}") if answers == "sentence" else None
    names = _names(rng, n_entities)
    n_forget = max(1, round(n_entities * forget_fraction))
    splits: dict[str, list[Item]] = {"forget": [], "retain": [], "utility": []}
    for e, name in enumerate(names):
        split = "forget" if e < n_forget else "retain"
        splits[split] += _person_items(rng, e, name, split, phrasing)
    splits["utility"] = _utility_items(rng)
    taken = set(names)
    holdout = [n for n in _names(rng, n_forget + len(taken)) if n not in taken][:n_forget]
    splits["holdout"] = [it for e, name in enumerate(holdout) for it in _person_items(rng, e, name, "holdout", phrasing)]
    return splits


def save(splits: dict[str, list[Item]], folder: str | Path) -> dict[str, Path]:
    """Write one ``<split>.jsonl`` per split into ``folder``; returns the paths."""
    folder = Path(folder)
    paths = {}
    for name, items in splits.items():
        paths[name] = folder / f"{name}.jsonl"
        save_items(paths[name], items)
    return paths
