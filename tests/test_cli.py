"""The `xlang` command as users run it: a real subprocess, real plugins, real corpora."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
XLANG = [sys.executable, "-m", "xlang.cli"]


def xlang(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XLANG, *args], capture_output=True, text=True, env={**env, "COLUMNS": "200"})


def test_languages_lists_the_three_shipped_languages(cli_env):
    result = xlang("languages", env=cli_env)
    assert result.returncode == 0, result.stderr
    for code, plugin in (("ko", "ko"), ("zh", "zh"), ("en", "en")):
        assert re.search(rf"│ {code}\s+│.*│ {plugin}\s+│", result.stdout), result.stdout


def test_plugins_shows_distributions_and_the_kill_switch_removes_them(cli_env):
    result = xlang("plugins", env=cli_env)
    assert result.returncode == 0, result.stderr
    for dist in ("xlang-ko", "xlang-zh", "xlang-en"):
        assert dist in result.stdout
    switched_off = xlang("languages", env={**cli_env, "XLANG_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert switched_off.returncode == 0
    assert not re.search(r"│ (ko|zh|en) ", switched_off.stdout)
    assert "xlang-ko" not in xlang("plugins", env={**cli_env, "XLANG_DISABLE_PLUGIN_AUTOLOAD": "1"}).stdout


def test_unknown_language_is_one_line_and_exit_2(cli_env):
    result = xlang("corpus", "stats", "--lang", "xx", env=cli_env)
    assert result.returncode == 2
    assert "unknown language 'xx'" in result.stderr and "ko" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_toml_is_one_line_and_exit_2(cli_env, tmp_path):
    (tmp_path / "xlang.toml").write_text("[stages.expand\nbudget = 3\n")
    result = xlang("extend", "--lang", "ko", "--out", str(tmp_path / "run"), env=cli_env)
    assert result.returncode == 2
    assert "xlang.toml is not valid TOML" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_stage_knob_fails_before_any_work(cli_env, tmp_path):
    (tmp_path / "xlang.toml").write_text("[stages.expand]\nbudgte = 3\n")
    result = xlang("extend", "--lang", "ko", "--out", str(tmp_path / "run"), env=cli_env)
    assert result.returncode == 2
    assert "budgte" in result.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_broken_plugin_package_is_named(cli_env, tmp_path):
    site = tmp_path / "site"
    dist = site / "xlang_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xlang-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[xlang]\nbroken = xlang_broken_module_that_is_not_installed\n")
    env = {**cli_env, "PYTHONPATH": str(site)}
    result = xlang("languages", env=env)
    assert result.returncode == 2
    assert "plugin 'broken'" in result.stderr and "XLANG_DISABLE_PLUGIN_AUTOLOAD" in result.stderr


def test_missing_base_model_folder_is_named(cli_env, tmp_path):
    result = xlang(
        "extend", "--lang", "ko", "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), env=cli_env
    )
    assert result.returncode == 2
    assert "nope" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("code", ["ko", "zh"])
def test_corpus_stats_reports_half_a_million_target_characters(cli_env, code):
    result = xlang("corpus", "stats", "--lang", code, env=cli_env)
    assert result.returncode == 0, result.stderr
    total = re.search(r"total: ([\d,]+) characters, ([\d,]+) in the target scripts", result.stdout)
    assert total, result.stdout
    assert int(total.group(2).replace(",", "")) >= 500_000


def test_extend_help_lists_the_stage_names(cli_env):
    result = xlang("extend", "--help", env=cli_env)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "x-llava (expand → init → pretrain → align → vit → evaluate)" in text
    for flag in ("--budget", "--source", "--initializer", "--init-option", "--steps", "--mix", "--companions"):
        assert flag in text


def test_recipes_lists_the_x_llava_recipe(cli_env):
    result = xlang("recipes", env=cli_env)
    assert result.returncode == 0 and "x-llava" in result.stdout


def test_a_japanese_plugin_installs_without_core_changes(cli_env, tmp_path):
    """The tutorial's package, installed with pip into its own folder, shows up everywhere."""
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO / "docs" / "examples" / "xlang-ja"),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    env = {**cli_env, "PYTHONPATH": str(target)}
    listed = xlang("languages", env=env)
    assert re.search(r"│ ja\s+│ Japanese", listed.stdout), listed.stdout
    assert "xlang-ja" in xlang("plugins", env=env).stdout
    stats = xlang("corpus", "stats", "--lang", "ja", env=env)
    assert stats.returncode == 0, stats.stderr
    total = re.search(r"total: ([\d,]+) characters, ([\d,]+) in the target scripts", stats.stdout)
    assert total and int(total.group(2).replace(",", "")) > 300
    assert "CC0-1.0" in stats.stdout  # the corpus license the plugin declared


@pytest.mark.slow
def test_the_tutorial_plugin_runs_extend_up_to_init(cli_env, tmp_path):
    """The commands of docs/plugin-tutorial.md, on the tutorial's own package: no core change needed."""
    tutorial = (REPO / "docs" / "plugin-tutorial.md").read_text(encoding="utf-8")
    commands = [
        line.split("#")[0].split()
        for block in re.findall(r"```bash\n(.*?)```", tutorial, re.S)
        for line in block.splitlines()
        if line.startswith("xlang ")
    ]
    assert ["xlang", "extend", "--lang", "ja", "--until", "init"] in commands
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(REPO / "docs" / "examples" / "xlang-ja")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = {**cli_env, "PYTHONPATH": str(target)}
    for command in commands:
        result = xlang(*command[1:], env=env)
        assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}{result.stderr}"
    manifest = json.loads((tmp_path / "runs" / "x-llava-ja" / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("expand", "init")] == ["done", "done"]
    assert manifest["stages"]["expand"]["metrics"]["new_tokens"] > 0
    # its VIT stages have no Japanese data: the full run stops up front with a message, not on others' data
    full = xlang("extend", "--lang", "ja", env=env)
    assert full.returncode == 2 and "'ja'" in full.stderr and "vit_data" in full.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("fit_steps=5", "'subword-freq' has no option 'fit_steps'"),
        ("frequency_weight=high", "invalid options for embedding initializer 'subword-freq': frequency_weight"),
        ("frequency_weight", "--init-option 'frequency_weight' is not NAME=VALUE"),
    ],
)
def test_an_initializer_option_it_does_not_take_is_exit_2(cli_env, tmp_path, option, message):
    result = xlang(
        "extend", "--lang", "ko", "--initializer", "subword-freq", "--init-option", option,
        "--out", str(tmp_path / "r"), env=cli_env,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_strategies_lists_each_strategy_and_a_plugin_initializers_options(cli_env):
    """The knobs of an initializer that a plugin ships are discoverable without reading its source."""
    listing = xlang("strategies", "--kind", "embedding_initializers", "--format", "json", env=cli_env)
    assert listing.returncode == 0, listing.stderr
    found = {entry["name"]: entry for entry in json.loads(listing.stdout)}
    assert {"random", "subword-mean", "subword-freq", "subword-fit"} <= set(found)
    assert found["subword-fit"]["plugin"] == "subword-fit" and found["random"]["options"] == []
    options = {row["name"]: row for row in found["subword-fit"]["options"]}
    assert options["fit_steps"]["default"] == "150" and options["fit_steps"]["type"] == "int"
    assert options["row_steps"]["description"].startswith("Adam steps of the second phase")
    # the same plugin's second name: the same knobs, its own defaults
    copy = {row["name"]: row for row in found["subword-copy"]["options"]}
    assert found["subword-copy"]["plugin"] == "subword-fit" and copy.keys() == options.keys()
    assert (copy["fit_steps"]["default"], copy["text_weight"]["default"], options["text_weight"]["default"]) == (
        "60",
        "0.0",
        "1.0",
    )
    one = xlang("strategies", "subword-fit", env={**cli_env, "COLUMNS": "200"})
    assert one.returncode == 0 and "row_learning_rate" in one.stdout and "keep_hard_share" in one.stdout
    bare = xlang("strategies", "random", env=cli_env)
    assert (
        bare.returncode == 0
        and "initializer 'random' (xlang.builtin.embedding_strategies) takes no options"
        in " ".join(bare.stdout.split())
    )
    missing = xlang("strategies", "subword-fitt", env=cli_env)
    assert missing.returncode == 2 and "no strategy named 'subword-fitt'" in missing.stderr


@pytest.mark.slow
def test_tokenizer_expand_and_stats_commands(cli_env, tmp_path, smollm2_dir):
    out = tmp_path / "ko-tokenizer"
    result = xlang(
        "tokenizer",
        "expand",
        "--lang",
        "ko",
        "--base",
        str(smollm2_dir),
        "--budget",
        "600",
        "--out",
        str(out),
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    from transformers import AutoTokenizer

    expanded = AutoTokenizer.from_pretrained(out)
    assert len(expanded) == 49_152 + 640  # 600 new entries, padded to a multiple of 64
    stats = xlang("tokenizer", "stats", "--lang", "ko", "--tokenizer", str(out), env=cli_env)
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"│ en\s+│.*100", stats.stdout)


def test_tokenizer_expand_refuses_a_zero_budget_and_writes_nothing(cli_env, tmp_path, smollm2_dir):
    out = tmp_path / "never"
    result = xlang(
        "tokenizer",
        "expand",
        "--lang",
        "ko",
        "--base",
        str(smollm2_dir),
        "--budget",
        "0",
        "--out",
        str(out),
        env=cli_env,
    )
    assert result.returncode == 2
    assert "budget" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_eval_bpc_scores_the_embedded_model(cli_env, smollm2_dir):
    result = xlang("eval", "bpc", "--model", str(smollm2_dir), "--lang", "en", "--max-chars", "1500", env=cli_env)
    assert result.returncode == 0, result.stderr
    row = re.search(r"│ en\s+│\s+([\d,]+) │\s+([\d.]+) │\s+([\d.]+) │", result.stdout)
    assert row, result.stdout
    assert 0.3 < float(row.group(3)) < 3.0  # English BPC of a real 135M model, not a placeholder


def test_a_malformed_mix_is_one_line_and_exit_2(cli_env, tmp_path):
    result = xlang("extend", "--lang", "ko", "--mix", "ko=half", "--out", str(tmp_path / "run"), env=cli_env)
    assert result.returncode == 2
    assert "'ko=half'" in result.stderr and "CODE=WEIGHT" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_vocabulary_source_reads_the_plugins_word_list_from_the_command_line(cli_env, tmp_path, smollm2_dir):
    """`--source vocabulary` uses the word list the Korean plugin declares (hunspell-ko, via xlang-debian)."""
    run = tmp_path / "run"
    extended = xlang(
        "extend", "--lang", "ko", "--base", str(smollm2_dir), "--until", "expand", "--budget", "300",
        "--source", "vocabulary", "--word-list", "hunspell-ko", "--out", str(run), env=cli_env,
    )  # fmt: skip
    assert extended.returncode == 0, extended.stdout + extended.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    expand = manifest["config"]["expand"]
    assert expand["candidate_sources"] == ["vocabulary"]
    assert expand["source_options"]["vocabulary"] == {"lists": ["hunspell-ko"], "prior_weight": 0.3}
    assert manifest["stages"]["expand"]["metrics"]["new_tokens"] > 100
    lists = {"XLANG_STAGES__EXPAND__SOURCE_OPTIONS__VOCABULARY__LISTS": '["nope"]'}
    wrong = xlang(
        "tokenizer", "expand", "--lang", "ko", "--base", str(smollm2_dir), "--source", "vocabulary",
        "--out", str(tmp_path / "w"), env={**cli_env, **lists},
    )  # fmt: skip
    assert wrong.returncode == 2 and "nope" in wrong.stderr and "hunspell-ko" in wrong.stderr
    assert not (tmp_path / "w").exists()
