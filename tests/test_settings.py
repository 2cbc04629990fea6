"""Settings layering: flags > XLANG_* env > xlang.toml > defaults; bad files give one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from xlang.errors import XlangError
from xlang.settings import load_settings


def test_layering_flags_over_env_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "xlang.toml"
    config.write_text(
        'runs_dir = "from-toml"\n[stages.expand]\nbudget = 100\nseed = 1\n[stages.init]\ninitializer = "mean"\n'
    )
    monkeypatch.setenv("XLANG_STAGES__EXPAND__BUDGET", "200")
    monkeypatch.setenv("XLANG_RUNS_DIR", "from-env")
    settings = load_settings(config, stages={"expand": {"seed": 7}})
    assert settings.runs_dir == Path("from-env")
    assert settings.stages["expand"] == {"budget": "200", "seed": 7}
    assert settings.stages["init"] == {"initializer": "mean"}
    assert load_settings(config, runs_dir=Path("from-flag")).runs_dir == Path("from-flag")


def test_xlang_toml_in_working_folder_is_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XLANG_CONFIG", raising=False)
    (tmp_path / "xlang.toml").write_text('recipe = "mine"\n')
    assert load_settings().recipe == "mine"


def test_malformed_toml_names_the_file(tmp_path: Path):
    config = tmp_path / "xlang.toml"
    config.write_text("budget = [\n")
    with pytest.raises(XlangError, match=r"xlang\.toml is not valid TOML"):
        load_settings(config)


def test_unknown_setting_is_refused(tmp_path: Path):
    config = tmp_path / "xlang.toml"
    config.write_text("cache_dri = '/tmp'\n")
    with pytest.raises(XlangError, match="cache_dri"):
        load_settings(config)


def test_missing_explicit_config_is_an_error(tmp_path: Path):
    with pytest.raises(XlangError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_hf_home_defaults_inside_the_cache(tmp_path: Path):
    settings = load_settings(cache_dir=tmp_path / "c")
    assert settings.hf_cache == tmp_path / "c" / "hf"
