from pathlib import Path

import pytest

from unpact.config import GridConfig, load_config
from unpact.errors import UnpactError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_demo_preset_is_the_default_study():
    assert load_config(ROOT / "configs" / "demo.yaml") == GridConfig()
    assert load_config(None) == GridConfig()


@pytest.mark.parametrize("text, message", [
    ("methods:\n  - method: GA_GDR\n    lrr: 0.1\n", r"methods\[0\]\.lrr: unknown key"),
    ("attribution:\n  alpha: high\n", r"attribution\.alpha: expected float, got 'high'"),
    ("methods:\n  - method: GA_GDR\n    lr: -0.1\n", r"methods\[0\]\.lr: -0.1 is invalid; use a positive"),
    ("attribution:\n  alpha: 1.5\n", r"attribution\.alpha: 1.5 is invalid"),
    ("methods:\n  - method: DPO\n", r"methods\[0\]\.method: 'DPO' is invalid; choose from GA_GDR"),
    ("methods:\n  - method: GA_GDR\n    hparams: {beta: 1}\n", r"methods\[0\]\.hparams.*GA_GDR takes alpha"),
    ("recovery:\n  styles: [shout]\n", r"recovery\.styles\[0\]: 'shout' is invalid"),
    ("data: [1, 2\n", r"invalid YAML"),
    ("", r"the config is empty; give at least a name"),  # not the demo study under another name
    ("# only a comment\n", r"the config is empty"),
])
def test_bad_configs_name_the_key_path(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(UnpactError, match=message) as e:
        load_config(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    """A preset a user copies from the README must load: every key known, every value valid."""
    cfg = load_config(path)
    assert cfg.models and cfg.benchmarks
