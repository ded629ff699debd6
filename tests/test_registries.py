"""Registries: a new attribution method or benchmark metric is one new module (or one registered function),
found without touching any other file; unknown names are one-line errors that list what exists."""

import json
import sys
import textwrap

import numpy as np
import pytest

import unpact.attribution
from unpact.attribution import ATTRIBUTION_METHODS, METHODS, Attribution, attribute, attribution_method
from unpact.data import Item
from unpact.errors import UnpactError
from unpact.evaluation import BENCHMARK_METRICS, Material, Missing, benchmark_metric, compute_metrics
from unpact.registry import Registry, UnknownNameError, import_submodules
from unpact.scoring import Capabilities

# ---------------------------------------------------------------- the generic Registry


def test_registry_keeps_order_help_and_reads_like_a_mapping():
    reg: Registry[int] = Registry("widget")
    reg.add("b", 2, help="the second")

    @reg.register("a", help="the first")
    def a():
        return 1

    assert reg.names() == ("b", "a") and list(reg) == ["b", "a"] and len(reg) == 2
    assert reg["a"] is a and reg.get("b") == 2 and "a" in reg and "c" not in reg and 3 not in reg
    assert reg.help("b") == "the second" and reg.describe() == "b: the second\na: the first"
    assert reg.get("c", None) is None
    assert dict(reg) == {"b": 2, "a": a}
    assert reg.remove("b") == 2 and reg.names() == ("a",)


def test_registry_unknown_name_is_one_line_error_naming_what_exists():
    reg: Registry[int] = Registry("widget")
    reg.add("sprocket", 1)
    reg.add("gear", 2)
    with pytest.raises(UnpactError) as info:
        reg.get("sprockett")
    assert str(info.value) == "unknown widget 'sprockett' (did you mean 'sprocket'?): choose one of sprocket, gear"
    with pytest.raises(KeyError):  # code that treats it as a dict still catches KeyError
        reg["nope"]
    assert "\n" not in str(info.value) and isinstance(info.value, UnknownNameError)
    with pytest.raises(UnpactError, match="none is registered"):
        Registry("widget").get("x")


def test_registry_rejects_duplicates_and_bad_names():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(UnpactError, match="'a' is registered already"):
        reg.add("a", 2)
    for bad in ("", " a", None):
        with pytest.raises(UnpactError, match="non-empty name"):
            reg.add(bad, 3)
    with pytest.raises(UnpactError, match="one line"):
        reg.add("b", 3, help="two\nlines")


def test_registry_casefold():
    reg: Registry[int] = Registry("method", casefold=True)
    reg.add("GA_GDR", 1)
    assert reg.get("ga_gdr") == 1 and "Ga_Gdr" in reg and reg.names() == ("GA_GDR",)
    with pytest.raises(UnpactError, match="registered already"):
        reg.add("ga_gdr", 2)


def test_discovery_imports_a_new_module_on_first_read_only(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from unpact.registry import Registry, import_submodules
        THINGS = Registry("thing", discover=lambda: import_submodules(__name__))
    """))
    (pkg / "zeta.py").write_text("from . import THINGS\nTHINGS.add('zeta', 26, help='last letter')\n")
    (pkg / "alpha.py").write_text("from . import THINGS\nTHINGS.add('alpha', 1)\n")
    (pkg / "_private.py").write_text("raise AssertionError('private modules are not discovered')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import plugins_for_test

        assert "plugins_for_test.alpha" not in sys.modules  # importing the package stays cheap
        assert plugins_for_test.THINGS.names() == ("alpha", "zeta")  # alphabetical: a stable order
        assert plugins_for_test.THINGS["zeta"] == 26
        assert import_submodules("plugins_for_test", first=("zeta",)) == ["plugins_for_test.zeta",
                                                                         "plugins_for_test.alpha"]
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "plugins_for_test"]:
            del sys.modules[name]


def test_a_failed_discovery_fails_again_rather_than_leaving_gaps():
    calls = []

    def discover():
        calls.append(1)
        raise ImportError("broken plugin")

    reg: Registry[int] = Registry("thing", discover=discover)
    for _ in range(2):
        with pytest.raises(ImportError):
            reg.names()
    assert len(calls) == 2


# ---------------------------------------------------------------- attribution methods


def _toy_attributions(questions, answers, target, name):
    return [Attribution(question=q, answer=a, tokens=q.split(), contributions=np.ones(len(q.split())), lp=0.0,
                        ablated_lp=None, method=name, target=target) for q, a in zip(questions, answers, strict=True)]


def test_built_in_methods_are_registered_in_the_cli_order():
    assert tuple(METHODS) == ("loo", "saliency", "input_x_gradient", "integrated_gradients")
    assert METHODS is ATTRIBUTION_METHODS
    assert [m.needs_weights for m in METHODS.values()] == [False, True, True, True]
    assert all(METHODS.help(name) for name in METHODS)


def test_a_new_module_in_the_package_is_a_new_method(tmp_path, monkeypatch):
    """One new file, nothing else edited: it is discovered, listed in METHODS and run by `attribute`."""
    (tmp_path / "toy_method_for_test.py").write_text(textwrap.dedent("""
        import numpy as np
        from unpact.attribution import Attribution, attribution_method

        @attribution_method("toy_ones", help="every word contributes 1", needs_weights=False)
        def toy_ones(scorer, questions, answers, *, target, **_):
            return [Attribution(question=q, answer=a, tokens=q.split(), contributions=np.ones(len(q.split())),
                                lp=0.0, ablated_lp=None, method="toy_ones", target=target)
                    for q, a in zip(questions, answers)]
    """))
    # the file sits in a folder of the package's search path, as a file in src/unpact/attribution/ would
    monkeypatch.setattr(unpact.attribution, "__path__", [*unpact.attribution.__path__, str(tmp_path)])
    try:
        assert "unpact.attribution.toy_method_for_test" in import_submodules("unpact.attribution")
        assert "toy_ones" in METHODS and METHODS.names()[-1] == "toy_ones"
        (attr,) = attribute(None, ["Where was he born?"], ["Paris"], "toy_ones", target="sum")
        assert attr.method == "toy_ones" and attr.contributions.tolist() == [1.0] * 4 and attr.target == "sum"
    finally:
        METHODS.remove("toy_ones")
        sys.modules.pop("unpact.attribution.toy_method_for_test", None)
    assert "toy_ones" not in METHODS


def test_a_method_registered_anywhere_runs_through_attribute_with_every_option():
    seen = {}

    @attribution_method("toy_echo", help="records the options it gets", needs_weights=False)
    def toy(scorer, questions, answers, **options):
        seen.update(options)
        return _toy_attributions(questions, answers, options["target"], "toy_echo")

    try:
        assert "toy_echo" in METHODS
        attribute("scorer", ["a b"], ["c"], "toy_echo", steps=4, my_option=7)
        assert seen == {"ablation": "delete", "features": "tokens", "spans": None, "baseline_id": None,
                        "target": "mean", "steps": 4, "rule": "gausslegendre", "my_option": 7}
    finally:
        METHODS.remove("toy_echo")


def test_unknown_method_is_a_one_line_error_listing_the_methods():
    with pytest.raises(UnpactError) as info:
        attribute(None, ["q"], ["a"], "integrated_gradient")
    message = str(info.value)
    assert message == ("unknown attribution method 'integrated_gradient' (did you mean 'integrated_gradients'?): "
                       "choose one of loo, saliency, input_x_gradient, integrated_gradients")


def test_a_served_model_is_refused_methods_that_need_weights():
    class Served:  # what a served backend declares: no weights, no internals
        capabilities = Capabilities(weights=False, distribution=False, hidden_states=False)

    with pytest.raises(UnpactError, match="'saliency' needs the model's weights.*use loo$"):
        attribute(Served(), ["q"], ["a"], "saliency")


def test_attribute_dispatches_to_the_built_in_methods(tiny_scorer):
    from unpact.attribution import gradient_attributions, loo_attributions

    q, a = ["Where was Marthe Bramley born?"], ["Drennick"]
    (got,) = attribute(tiny_scorer, q, a, "loo", ablation="replace")
    (want,) = loo_attributions(tiny_scorer, q, a, ablation="replace")
    assert got.method == want.method == "loo_replace"
    np.testing.assert_allclose(got.contributions, want.contributions)
    (got,) = attribute(tiny_scorer, q, a, "integrated_gradients", steps=4, rule="riemann_middle")
    (want,) = gradient_attributions(tiny_scorer, q, a, method="integrated_gradients", steps=4, rule="riemann_middle")
    assert got.method == "integrated_gradients"
    np.testing.assert_allclose(got.contributions, want.contributions)


# ---------------------------------------------------------------- benchmark metrics


def _items(split, n, perturbed=True):
    return [Item(id=f"{split}{i}", question=f"question {i}?", answer=f"answer number {i}", split=split,
                 perturbed_answers=("wrong one", "wrong two") if perturbed else ()) for i in range(n)]


def _material(**kw):
    splits = {"forget": _items("forget", 3), "retain": _items("retain", 2)}
    base = dict(tofu={"forget": {"probability": 0.4, "truth_ratios": [0.5, 0.9, 1.2]},
                      "retain": {"probability": 0.7, "truth_ratios": [0.2, 0.4]}},
                answers={s: {"answers": [it.answer for it in its]} for s, its in splits.items()},
                items=splits, mia={"min_k": 0.8}, gold=None, muse=None, original_muse=None)
    return Material(**{**base, **kw})


def test_built_in_metrics_keep_the_metrics_json_layout():
    gold = {"tofu": {"forget": {"truth_ratios": [0.6, 1.0, 0.8]}}, "mia_auc": {"min_k": 0.5}}
    muse = {"knowmem": {"forget": ["answer number 0", "x", "y"], "retain": ["answer number 0", "z"]},
            "verbmem": {"continuations": ["the cat sat"], "references": ["the cat sat down"]}}
    values, why = compute_metrics(_material(gold=gold, muse=muse, original_muse=muse))
    assert list(values) == ["tofu", "muse"]
    assert list(values["tofu"]) == ["forget", "retain", "forget_quality", "model_utility"]
    assert list(values["tofu"]["forget"]) == ["probability", "rouge_l_recall", "truth_ratio"]
    assert list(values["muse"]) == ["privleak_min_k", "knowmem_forget", "knowmem_retain", "utility_preserved",
                                    "verbmem_forget"]
    assert values["muse"]["utility_preserved"] == 1.0 and values["muse"]["privleak_min_k"] == pytest.approx(-60.0)
    assert why == {}


def test_missing_material_says_which_field_and_what_data_gives_it():
    no_perturbed = {"forget": {"probability": 0.4, "truth_ratios": []}}
    values, why = compute_metrics(_material(tofu=no_perturbed, items={"forget": _items("forget", 3, False)},
                                            mia=None))
    assert values["tofu"]["forget"]["truth_ratio"] is None and values["tofu"]["forget_quality"] is None
    assert why["tofu.forget.truth_ratio"] == ("needs tofu.forget.truth_ratios: per-item truth ratios: "
                                              "items with perturbed answers")
    assert "gold.tofu.forget.truth_ratios" in why["tofu.forget_quality"]
    assert why["tofu.model_utility"] == "no TOFU number outside the forget split (retain, utility)"
    # MUSE's own numbers are left out without MUSE material; PrivLeak stays, null
    assert values["muse"] == {"privleak_min_k": None}
    assert "muse.verbmem" in why["muse.verbmem_forget"] and "mia.min_k" in why["muse.privleak_min_k"]
    for reason in why.values():
        assert "\n" not in reason


def test_a_registered_metric_lands_in_its_section_without_other_edits():
    @benchmark_metric("tofu.toy_answers", per_split=True, help="how many greedy answers",
                      needs={"answers.{split}.answers": "greedy answers"})
    def answers_count(m):
        return len(m["answers.{split}.answers"])

    @benchmark_metric("toybench.forget_probability_doubled", help="twice TOFU's forget probability",
                      needs={"tofu.forget.probability": "TOFU material"})
    def doubled(m):
        if m["tofu.forget.probability"] > 0.45:
            raise Missing("too likely to double")
        return 2 * m["tofu.forget.probability"]

    try:
        assert "tofu.toy_answers" in BENCHMARK_METRICS
        values, _ = compute_metrics(_material())
        assert values["tofu"]["retain"]["toy_answers"] == 2
        assert list(values["tofu"]["forget"])[-1] == "toy_answers"  # after the built-in ones: their order stays
        assert list(values) == ["tofu", "muse", "toybench"]
        assert values["toybench"] == {"forget_probability_doubled": 0.8}
        values, why = compute_metrics(_material(tofu={"forget": {"probability": 0.5, "truth_ratios": []}}))
        assert values["toybench"] == {"forget_probability_doubled": None}
        assert why["toybench.forget_probability_doubled"] == "too likely to double"
    finally:
        BENCHMARK_METRICS.remove("tofu.toy_answers")
        BENCHMARK_METRICS.remove("toybench.forget_probability_doubled")
    assert "toybench" not in compute_metrics(_material())[0]


def test_unknown_metric_is_a_one_line_error_listing_the_metrics():
    with pytest.raises(UnpactError) as info:
        BENCHMARK_METRICS.get("tofu.forget_qualty")
    message = str(info.value)
    assert message.startswith("unknown benchmark metric 'tofu.forget_qualty' (did you mean 'tofu.forget_quality'?): "
                              "choose one of tofu.probability, tofu.rouge_l_recall,")
    assert "muse.verbmem_forget" in message and "\n" not in message
    with pytest.raises(UnpactError, match="name it <benchmark>.<key>"):
        benchmark_metric("forget_quality", help="", needs={})


def test_standard_metrics_is_the_registry_output():
    from unpact.study.standard import standard_metrics

    m = _material()
    got = standard_metrics(m.tofu, m.answers, m.items, m.mia, m.gold)
    values, why = compute_metrics(m)
    # plus why each null metric is null; MUSE's own, left out without MUSE material, need no reason
    null = ("tofu.forget_quality", "muse.privleak_min_k")
    assert json.dumps(got) == json.dumps({**values, "missing": {where: why[where] for where in null}})
