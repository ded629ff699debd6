"""Property-based fuzzing of the loaders that read users' files: item JSON Lines, benchmark folders
and study configs. Whatever a file holds, loading either gives valid values that survive a save and
reload unchanged, or raises UnpactError with a one-line message naming the file; any other exception
is a bug (it reaches the user as a traceback instead of `error: <file>: <what to do>`)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import types
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from unpact.config import GridConfig, load_config
from unpact.data import Item, load_items, save_items
from unpact.data.benchmarks import load_benchmark
from unpact.data.benchmarks.base import read_records
from unpact.data.schema import item_from_dict
from unpact.errors import UnpactError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# derandomize: CI draws the same examples every run, so a failure is a bug and never a lucky draw;
# no database, so nothing is written into the checkout
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_names = itertools.count()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    # module scope: hypothesis runs many examples per test call, and a function-scoped tmp_path would
    # be shared by all of them anyway; unique names keep examples apart instead
    return tmp_path_factory.mktemp("fuzz")


def fresh(root: Path, suffix: str = "") -> Path:
    return root / f"f{next(_names):06d}{suffix}"


def refused(e: UnpactError, *names: object) -> None:
    """The contract for an error: one line (no line break of any kind) that names the file."""
    msg = str(e)
    assert msg.splitlines() == [msg], f"not a single line: {msg!r}"
    assert any(str(n) in msg for n in names), f"{msg!r} names none of {names}"


def outcome(load, *names: object):
    """``load()``'s result, or None after checking its UnpactError; any other exception fails the test."""
    try:
        result = load()
    except UnpactError as e:
        refused(e, *names)
        event("refused")
        return None
    event("loaded")
    return result


# -- strategies ----------------------------------------------------------------------------------

# any code point but surrogates (a JSON or YAML file cannot hold a lone one): control characters,
# line separators (\x85, \u2028), byte-order marks and NULs included
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
# a character str.strip() keeps: categories Cc, Zs, Zl and Zp hold every whitespace character
SOLID = st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"))
NONBLANK = st.tuples(TEXT, SOLID, TEXT).map("".join)
JSON_SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON = st.recursive(JSON_SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3),
                    max_leaves=6)

FIELDS = ["id", "question", "answer", "split", "paraphrased_question", "perturbed_answers", "entity", "attribute"]
NEAR_MISSES = ["ID", "Id", "id ", "Question", "questions", "answr", "answer_", "perturbed_answer",
               "paraphrased_answer", "Split", "", "prompt", "text"]
KEY = st.sampled_from(FIELDS + NEAR_MISSES) | TEXT
VALUE = st.one_of(NONBLANK, TEXT, JSON, st.lists(NONBLANK, max_size=3), st.lists(JSON, max_size=2))

VALID_ROW = st.fixed_dictionaries(
    {"id": NONBLANK, "question": NONBLANK, "answer": NONBLANK},
    optional={"split": TEXT, "paraphrased_question": st.none() | TEXT, "perturbed_answers": st.lists(NONBLANK, max_size=3),
              "entity": st.none() | TEXT, "attribute": st.none() | TEXT})
# one step from valid: a field overwritten or added, or a required one removed
NEAR_ROW = (st.tuples(VALID_ROW, KEY, VALUE).map(lambda t: {**t[0], t[1]: t[2]})
            | st.tuples(VALID_ROW, st.sampled_from(["id", "question", "answer"])).map(
                lambda t: {k: v for k, v in t[0].items() if k != t[1]}))
ROW = st.one_of(VALID_ROW, NEAR_ROW, st.dictionaries(KEY, VALUE, max_size=6))
LINE = ROW | JSON  # a line need not even hold an object

# near-JSON text: the pieces a JSON Lines file is made of, in random order, plus any character
JSONISH = st.lists(st.sampled_from(list('{}[]",:\n\r\t 019-.eE\\') + [
    '"id"', '"question"', '"answer"', '"x"', "null", "true", "NaN", "Infinity", "\ufeff", "\u2028", "\x00",
    '{"id": "a", "question": "q", "answer": "a"}\n']) | st.characters(exclude_categories=("Cs",)),
    max_size=40).map("".join)


def dump_lines(rows, ascii: bool) -> str:
    return "".join(json.dumps(r, ensure_ascii=ascii) + "\n" for r in rows)


def check_item(item: Item, row: dict) -> None:
    """A loaded item is what its row said, and of the declared types."""
    for key in ("id", "question", "answer"):
        assert getattr(item, key) == row[key] and isinstance(row[key], str) and row[key].strip()
    assert item.split == (row.get("split") or "") and isinstance(item.split, str)
    assert item.paraphrased_question == (row.get("paraphrased_question") or None)
    assert item.perturbed_answers == tuple(row.get("perturbed_answers") or [])
    assert all(isinstance(p, str) and p.strip() for p in item.perturbed_answers)
    for key in ("paraphrased_question", "entity", "attribute"):
        assert getattr(item, key) is None or isinstance(getattr(item, key), str)
    assert item.entity == row.get("entity") and item.attribute == row.get("attribute")


def assert_round_trip(root: Path, items: list[Item]) -> None:
    path = fresh(root, ".jsonl")
    save_items(path, items)
    assert load_items(path) == items


# -- 1. the item loader ----------------------------------------------------------------------------


@settings(FUZZ, max_examples=300)
@given(row=ROW)
def test_item_from_dict_validates_or_refuses(row):
    item = outcome(lambda: item_from_dict(row, "items.jsonl:7"), "items.jsonl:7")
    if item is not None:
        check_item(item, row)


@settings(FUZZ, max_examples=200)
@given(lines=st.lists(LINE, max_size=4), ascii=st.booleans())
@example(lines=[{"id": "a\nb", "question": "q", "answer": "a"}] * 2, ascii=True)  # a newline in the error
@example(lines=[{"i\u2028d": "a", "question": "q", "answer": "a"}], ascii=False)  # in the typo hint
@example(lines=[{"id": "a", "question": "q", "answer": "a", "split": [1]}], ascii=True)  # was split '[1]'
def test_item_files_load_and_round_trip_or_refuse(root, lines, ascii):
    path = fresh(root, ".jsonl")
    path.write_text(dump_lines(lines, ascii), encoding="utf-8")
    items = outcome(lambda: load_items(path), path)
    if items is not None:
        assert len(items) == len(lines)
        for item, row in zip(items, lines, strict=True):
            check_item(item, row)
        assert_round_trip(root, items)


@FUZZ
@given(rows=st.lists(VALID_ROW, min_size=1, max_size=4, unique_by=lambda r: r["id"]), ascii=st.booleans(),
       bom=st.booleans())
def test_valid_item_files_always_load(root, rows, ascii, bom):
    path = fresh(root, ".jsonl")
    path.write_text(("\ufeff" if bom else "") + dump_lines(rows, ascii), encoding="utf-8")
    items = load_items(path)
    for item, row in zip(items, rows, strict=True):
        check_item(item, row)
    assert_round_trip(root, items)


@settings(FUZZ, max_examples=150)
@given(content=st.binary(max_size=64) | JSONISH.map(lambda s: s.encode("utf-8")))
@example(content=b"[" * 100_000)  # was RecursionError from json.loads
@example(content=b'{"id": ' + b"1" * 5000 + b"}")  # was a ValueError message without the file name
@example(content=b"\xef\xbb\xbf" + b'{"id": "a", "question": "q", "answer": "a"}\n')
@example(content=b'{"id": "a", "question": "q", "answer": "a"}\r\n\r\n{"id": "b", "question": "q", "answer": "b"}')
def test_item_file_bytes_load_or_refuse(root, content):
    path = fresh(root, ".jsonl")
    path.write_bytes(content)
    items = outcome(lambda: load_items(path), path)
    if items is not None:
        assert_round_trip(root, items)


# -- 2. benchmark adapters -------------------------------------------------------------------------


@settings(FUZZ, max_examples=150)
@given(content=st.binary(max_size=64) | JSONISH.map(lambda s: s.encode("utf-8")),
       suffix=st.sampled_from([".json", ".jsonl"]))
@example(content=b"[" * 100_000, suffix=".json")  # was RecursionError
@example(content=b"[" + b"9" * 5000 + b"]", suffix=".json")  # was ValueError (integer too long)
def test_read_records_reads_or_refuses(root, content, suffix):
    path = fresh(root, suffix)
    path.write_bytes(content)
    rows = outcome(lambda: read_records(path), path)
    assert rows is None or isinstance(rows, list)


def write_rows(path: Path, rows: list, as_list: bool) -> None:
    path.write_text(json.dumps(rows, indent=1) if as_list else dump_lines(rows, ascii=False), encoding="utf-8")


@FUZZ
@given(forget=st.lists(VALID_ROW, min_size=1, max_size=3) | st.lists(LINE, max_size=3),
       retain=st.lists(VALID_ROW, min_size=1, max_size=3) | st.lists(LINE, max_size=3),
       as_list=st.tuples(st.booleans(), st.booleans()), raw=st.none() | st.binary(max_size=32))
def test_jsonl_benchmark_loads_or_refuses(root, forget, retain, as_list, raw):
    folder = fresh(root)
    folder.mkdir()
    write_rows(folder / "forget.jsonl", forget, as_list[0])
    write_rows(folder / "retain.jsonl", retain, as_list[1])
    if raw is not None:
        (folder / "utility.jsonl").write_bytes(raw)
    bench = outcome(lambda: load_benchmark("jsonl", folder), folder)
    if bench is None:
        return
    for split, rows in (("forget", forget), ("retain", retain)):
        assert len(bench.splits[split]) == len(rows)
        for item, row in zip(bench.splits[split], rows, strict=True):
            assert item.split == split and (item.question, item.answer) == (row["question"], row["answer"])
    ids = [it.id for items in bench.splits.values() for it in items]
    assert len(ids) == len(set(ids))


@FUZZ
@given(forget=st.lists(VALID_ROW, min_size=1, max_size=3, unique_by=lambda r: r["id"]),
       retain=st.lists(VALID_ROW, min_size=1, max_size=3, unique_by=lambda r: r["id"]),
       as_list=st.tuples(st.booleans(), st.booleans()), with_ids=st.booleans())
def test_valid_jsonl_benchmarks_always_load(root, forget, retain, as_list, with_ids):
    """JSON Lines or one JSON list (read_records takes both), with or without ids."""
    folder = fresh(root)
    folder.mkdir()
    for name, rows, lst in (("forget", forget, as_list[0]), ("retain", retain, as_list[1])):
        rows = [{**r, "id": f"{name}:{r['id']}"} if with_ids else {k: v for k, v in r.items() if k != "id"}
                for r in rows]
        write_rows(folder / f"{name}.jsonl", rows, lst)
    bench = load_benchmark("jsonl", folder)
    assert [it.question for it in bench.splits["forget"]] == [r["question"] for r in forget]
    assert [it.answer for it in bench.splits["retain"]] == [r["answer"] for r in retain]


TOFU_KEY = st.sampled_from(["question", "answer", "perturbed_answer", "paraphrased_answer", "id", "split"]) | TEXT
TOFU_VALID = st.fixed_dictionaries({"question": NONBLANK, "answer": NONBLANK},
                                   optional={"perturbed_answer": st.lists(NONBLANK, max_size=3),
                                             "paraphrased_answer": TEXT})
TOFU_ROWS = st.lists(TOFU_VALID, min_size=1, max_size=3) | st.lists(
    st.one_of(TOFU_VALID, st.dictionaries(TOFU_KEY, VALUE, max_size=5), JSON), max_size=3)


@settings(FUZZ, max_examples=80)
@given(forget=TOFU_ROWS, retain=TOFU_ROWS,
       raw=st.none() | st.binary(max_size=32))
def test_tofu_benchmark_loads_or_refuses(root, forget, retain, raw):
    folder = fresh(root)
    folder.mkdir()
    (folder / "forget10.json").write_text(dump_lines(forget, ascii=False), encoding="utf-8")
    if raw is None:
        (folder / "retain90.json").write_text(dump_lines(retain, ascii=False), encoding="utf-8")
    else:
        (folder / "retain90.json").write_bytes(raw)
    bench = outcome(lambda: load_benchmark("tofu", folder), folder)
    if bench is None:
        return
    for item, row in zip(bench.splits["forget"], forget, strict=True):
        assert (item.question, item.answer) == (row["question"], row["answer"])
        assert item.perturbed_answers == tuple(row.get("perturbed_answer") or [])
        assert item.paraphrased_question is None  # TOFU's paraphrased_answer must not become a question


# -- 3. the config loader --------------------------------------------------------------------------

# the keys of every level of a study, and near misses of them
CONFIG_KEYS = sorted({f.name for f in dataclasses.fields(GridConfig)} | {
    "builtin", "path", "format", "options", "method", "lr", "epochs", "hparams", "alpha", "beta", "where",
    "set", "model", "benchmark", "seed", "n_entities", "forget_fraction", "styles", "attacks", "raw_text",
    "forget_known", "trust_remote_code", "Name", "seeds ", "method s", "hparam"})
# values a config typically holds, and the edges of what validation accepts
SPECIAL = st.sampled_from([0, 1, -1, 2, 0.5, 1.0, 1e-9, 1e300, float("inf"), float("nan"), "5e-4", "1e999", "",
                           "builtin", "GA_GDR", "KeyNPO", "instruction", "sampling", "tofu", "nope", True, None,
                           [], {}, [0], {"alpha": 1.0}])
YAML_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, SPECIAL)
YAML_KEY = st.sampled_from(CONFIG_KEYS) | TEXT | st.integers(-3, 3) | st.booleans() | st.none()
YAML_VALUE = st.recursive(YAML_SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(YAML_KEY, c, max_size=3),
                          max_leaves=8)
YAML_DOC = st.dictionaries(YAML_KEY, YAML_VALUE, max_size=5) | YAML_VALUE
YAMLISH = st.lists(st.sampled_from(list("{}[]:,-#&*!|>'\"\n\t ") + [
    "name: ", "seeds: ", "methods:\n  - ", "method: GA_GDR", "lr: 5e-4", "? ", "&a ", "*a", "!!binary ", "!!set ",
    "\ufeff", "\x00", "\x85", "---\n", "..."]) | st.characters(exclude_categories=("Cs",)), max_size=40).map("".join)


def _is(value, tp) -> bool:
    """Whether ``value`` holds the type ``tp`` of a config field, all the way down."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp) and all(_is(getattr(value, k), t) for k, t in typing.get_type_hints(tp).items())
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_is(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_is(k, args[0]) and _is(v, args[1]) for k, v in value.items())
    return tp is typing.Any or type(value) is tp or (tp is type(None) and value is None)


def check_config(root: Path, cfg: GridConfig) -> None:
    """A loaded config, and every cell's settings after overrides, hold their declared types; its
    to_dict() saved as YAML loads back to the same config."""
    assert _is(cfg, GridConfig)
    for model, bench, seed in itertools.product(cfg.models, cfg.benchmarks, cfg.seeds):
        group = cfg.group(model, bench, seed)
        assert all(_is(m, type(m)) for m in group.methods), group.methods
    path = fresh(root, ".yaml")
    text = yaml.safe_dump(cfg.to_dict(), allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    again = load_config(path)
    # compared as YAML: a NaN inside `options` (Any) is never equal to itself
    assert yaml.safe_dump(again.to_dict(), allow_unicode=True) == text


def load_or_refuse(root: Path, path: Path) -> None:
    cfg = outcome(lambda: load_config(path), path)
    if cfg is not None:
        check_config(root, cfg)


@settings(FUZZ, max_examples=200)
@given(doc=YAML_DOC, unicode=st.booleans())
@example(doc={"na\nme": 1}, unicode=True)  # the key went into the message as is: two lines
@example(doc={"overrides": [{"where": {"model": [1]}, "set": {}}]}, unicode=False)  # was TypeError
@example(doc={"overrides": [{"where": {}, "set": {"hparams": {1: 2.0, "x": 1.0}}}]}, unicode=False)  # TypeError
@example(doc={"overrides": [{"where": {}, "set": {"hparams": {"alpha": "5e-4"}}}]}, unicode=False)  # a str alpha
@example(doc={"benchmarks": [{"name": "b", "path": "x", "options": {"a\u2028b": 1}}]}, unicode=True)
def test_config_documents_load_or_refuse(root, doc, unicode):
    path = fresh(root, ".yaml")
    path.write_text(yaml.safe_dump(doc, allow_unicode=unicode), encoding="utf-8")
    load_or_refuse(root, path)


@settings(FUZZ, max_examples=150)
@given(content=YAMLISH.map(lambda s: s.encode("utf-8")) | st.binary(max_size=40))
@example(content=b"[" * 10_000)  # was RecursionError inside PyYAML
@example(content=b"name: a\x00")  # PyYAML's message for it spans two lines
@example(content=b"seeds: &a [*a]\n")  # a list that holds itself
def test_config_text_loads_or_refuses(root, content):
    path = fresh(root, ".yaml")
    path.write_bytes(content)
    load_or_refuse(root, path)


def _containers(node, at=()):
    """(path, node) for every mapping and list in a YAML document, the document itself first."""
    yield at, node
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in children:
        if isinstance(child, dict | list):
            yield from _containers(child, (*at, key))


BASES = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(CONFIGS.glob("*.yaml"))}


@st.composite
def mutated_configs(draw):
    """A shipped config with one key deleted, one value replaced or one key added, anywhere in it."""
    doc = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    at, node = draw(st.sampled_from(list(_containers(doc))))
    op = draw(st.sampled_from(["delete", "replace", "add"]))
    if isinstance(node, dict):
        key = draw(st.sampled_from(sorted(node))) if node and op != "add" else draw(YAML_KEY)
        if op == "delete" and node:
            del node[key]
        else:
            node[key] = draw(YAML_VALUE)
    elif node and op != "add":
        i = draw(st.integers(0, len(node) - 1))
        if op == "delete":
            del node[i]
        else:
            node[i] = draw(YAML_VALUE)
    else:
        node.insert(draw(st.integers(0, len(node))), draw(YAML_VALUE))
    return doc


def test_shipped_configs_load():
    assert BASES.keys() >= {"demo.yaml", "full-example.yaml"}
    for name in BASES:
        load_config(CONFIGS / name)


@settings(FUZZ, max_examples=300)
@given(doc=mutated_configs())
def test_mutated_configs_load_and_round_trip_or_refuse(root, doc):
    path = fresh(root, ".yaml")
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    load_or_refuse(root, path)
