"""The committed config files: every key is known, and default.yaml documents the real defaults."""

from pathlib import Path

import pytest
import yaml

from recscope import config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_config_loads(path):
    config.load(path)


def test_default_yaml_lists_every_key_with_its_real_default():
    documented = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    defaults = config.Config().to_dict()
    derived = config.DERIVED  # filled from the data, never set by hand
    for section, values in defaults.items():
        for key, value in values.items():
            if key in derived:
                continue
            assert key in documented[section], f"{section}.{key} is not documented in configs/default.yaml"
            expected = list(value) if isinstance(value, tuple) else value
            assert documented[section][key] == expected, f"{section}.{key}: yaml says {documented[section][key]!r}"


def test_every_documented_key_has_a_comment():
    for line in (CONFIGS / "default.yaml").read_text().splitlines():
        if line.startswith("  ") and ":" in line:
            assert "# (" in line, f"undocumented key line: {line!r}"
