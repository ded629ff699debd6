"""The attack registry (`unpact.recovery.base`): what every attack declares, the typed keys its results
are written under, and everything derived from it (config keys and checks, the study's dispatch, the
audit's lists, the CLI listing). Adding an attack is one module: the test attack below is registered
here and nowhere else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from unpact.cli import main
from unpact.config import RecoveryConfig, StudyConfig, from_dict, validate
from unpact.errors import UnpactError
from unpact.recovery import ATTACKS, Attack, AttackContext, AttackKey, AttackRun, register
from unpact.recovery.base import CHANNELS, NoSettings, settings_of
from unpact.study import Study
from unpact.study.audit import DEFAULT_ATTACKS, PROMPT_ATTACKS, WEIGHT_ATTACKS

# every result name the built-in attacks write, as metrics.json and records.jsonl hold them
NAMES = ["focus_on_key:instruction", "focus_on_key_self:mark", "focus_on_key_heuristic:repeat_keywords",
         "placebo:instruction", "placebo_low:instruction", "focus_on_key:instruction:retain",
         "focus_on_key:mark:utility", "sampling", "paraphrase", "few_shot", "quantize_int8", "quantize_int4",
         "relearn", "repeat", "quantize_int4_g32", "quantize_int4_g128", "logit_lens", "probe",
         "direction_ablation", "prefill", "many_shot_k16", "many_shot_max", "relearn_unrelated"]


def test_every_attack_declares_what_the_rest_of_unpact_derives_from_it():
    assert list(ATTACKS)[0] == "focus_on_key" and ATTACKS["focus_on_key"].always
    orders = [a.order for a in ATTACKS.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)  # one run order, no ties
    fields = {f.name for f in dataclasses.fields(RecoveryConfig)}
    for name, attack in ATTACKS.items():
        assert attack.name == name and attack.help and "\n" not in attack.help
        assert dataclasses.is_dataclass(attack.Settings)
        assert not attack.changes_weights or attack.needs_weights, name  # a changed copy needs the weights
        for f in dataclasses.fields(attack.Settings):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help line"
            assert attack.config_prefix() + f.name in fields  # every setting is a config key
    assert set(PROMPT_ATTACKS) | set(WEIGHT_ATTACKS) == set(ATTACKS.selectable())
    assert set(WEIGHT_ATTACKS) == {"quantize", "relearn", "relearn_unrelated", "logit_lens", "probe",
                                   "direction_ablation"} and "repeat" not in DEFAULT_ATTACKS
    assert {a.channel for a in ATTACKS.values()} == set(CHANNELS) - {"output"}  # every channel has an attack
    assert RecoveryConfig().attacks == ["sampling", "paraphrase", "few_shot", "quantize", "relearn"]


@pytest.mark.parametrize("name", NAMES)
def test_result_names_parse_to_typed_keys_and_back(name):
    key = AttackKey.parse(name)
    assert key.attack in ATTACKS and key.name == name
    assert key.is_placebo == name.startswith("placebo")
    assert key.changes_weights == (key.attack in ("quantize", "relearn", "relearn_unrelated"))


def test_typed_keys_carry_what_the_name_grammar_held():
    assert AttackKey.parse("focus_on_key_self:mark") == AttackKey("focus_on_key", "mark", "self")
    assert AttackKey.parse("placebo_low:instruction").keywords == "placebo_low"
    assert AttackKey.parse("focus_on_key:mark:utility").split == "utility"
    assert AttackKey.parse("quantize_int4") == AttackKey("quantize", "int4")
    assert AttackKey.parse("quantize_int4_g64") == AttackKey("quantize", "int4_g64")
    assert AttackKey.parse("many_shot_max") == AttackKey("many_shot", "max")
    assert AttackKey.parse("relearn_unrelated") == AttackKey("relearn_unrelated")  # not a variant of relearn


def test_an_unknown_result_name_or_attack_is_one_line_naming_the_known_ones():
    with pytest.raises(UnpactError, match=r"unknown attack result 'samplin'.*did you mean 'sampling'.*known attacks: "
                                          r"focus_on_key, sampling"):
        AttackKey.parse("samplin")
    with pytest.raises(UnpactError, match="unknown attack 'relarn' .did you mean 'relearn'.*: choose one of .*focus_on_key"):
        ATTACKS["relarn"]


@pytest.mark.parametrize(("recovery", "message"), [
    ({"attacks": ["focus_on_key"]}, r"recovery\.attacks\[0\]: 'focus_on_key' is invalid; choose from sampling"),
    ({"quantize_bits": [8, 3]}, r"recovery\.quantize_bits\[1\]: 3 is invalid; use 8 or 4"),
    ({"sampling_n": 0}, r"recovery\.sampling_n: 0 is invalid; use at least 1 sample"),
    ({"repeat_times": 1}, r"recovery\.repeat_times: 1 is invalid; use at least 2"),
    ({"quantize_groups": [32, 0]}, r"recovery\.quantize_groups\[1\]: 0 is invalid; use a group size ≥ 1"),
    ({"logit_lens_rank": 0}, r"recovery\.logit_lens_rank: 0 is invalid; use a rank of at least 1"),
    ({"probe_layer": -2}, r"recovery\.probe_layer: -2 is invalid; use a layer index ≥ 0, or -1"),
    ({"probe_c": 0}, r"recovery\.probe_c: 0.0 is invalid; use a positive value"),
    ({"direction_ablation_layer": -3}, r"recovery\.direction_ablation_layer: -3 is invalid"),
    ({"prefill_plain": " "}, r"recovery\.prefill_plain: ' ' is invalid; use a non-empty prefix"),
    ({"many_shot_k": [16, -1]}, r"recovery\.many_shot_k\[1\]: -1 is invalid; use a count ≥ 1, or 0"),
    ({"styles": ["shout"]}, r"recovery\.styles\[0\]: 'shout' is invalid; choose from instruction"),
])
def test_settings_are_checked_from_their_declarations(recovery, message):
    cfg = from_dict(StudyConfig, {"recovery": recovery})
    with pytest.raises(UnpactError, match=message):
        validate(cfg)


def test_settings_of_reads_an_attacks_own_dataclass_from_the_flat_config():
    cfg = RecoveryConfig(sampling_n=3, quantize_bits=[4])
    assert settings_of(ATTACKS["sampling"], cfg) == ATTACKS["sampling"].Settings(n=3, temperature=1.0)
    assert settings_of(ATTACKS["quantize"], cfg).bits == [4]


class _Echo:
    """A scorer stand-in: answers each prompt with its last line."""

    def generate(self, prompts):
        return [p.split("\n")[-1] for p in prompts]


@dataclass
class _ShoutSettings:
    pass


@pytest.fixture
def shout():
    """An attack defined only here: asks every forgotten question in capitals and answers with the gold."""

    @register
    class Shout(Attack):
        name = "shout"
        help = "the question in capitals"
        order = 99
        Settings = NoSettings

        def run(self, ctx: AttackContext, settings) -> dict[AttackKey, AttackRun]:
            prompts = [q.upper() for q in ctx.questions]
            return {AttackKey(self.name): AttackRun(prompts, [it.answer for it in ctx.forget])}

    yield Shout
    ATTACKS.remove("shout")


def test_a_new_attack_module_is_dispatched_validated_and_listed(shout, benchmark, tmp_path, capsys):
    cfg = StudyConfig(recovery=RecoveryConfig(attacks=["shout", "repeat"], styles=[]))
    validate(cfg)  # the new name is a valid recovery.attacks entry
    study = Study(cfg, tmp_path)
    study.splits = {"forget": benchmark["forget"][:3], "retain": benchmark["retain"][:3], "utility": []}
    out = study.attack(_Echo())
    assert list(out) == ["repeat", "shout"]  # run order from the declarations, not the config's order
    assert out["shout"]["correct"] == [True, True, True]
    assert out["shout"]["prompts"][0] == benchmark["forget"][0].question.upper()
    q = benchmark["forget"][0].question.strip()
    assert out["repeat"]["prompts"][0] == f"{q}\n{q}" and out["repeat"]["correct"] == [False] * 3
    assert main(["attacks"]) in (0, None)
    listing = capsys.readouterr().out
    assert "shout" in listing and "the question in capitals" in listing and "recovery.repeat_times = 2" in listing
