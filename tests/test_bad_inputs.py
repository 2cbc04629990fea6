"""Bad inputs and faults, each driven through the `xlang` command in this process (click's CliRunner): every
one must end with exactly one line on stderr starting `error:`, exit status 2, no traceback, and nothing
half-written (no run folder, output or staging folder that was not there before).

Each case fails before any heavy work, so the whole list runs in seconds. The faults that need a real
process (signals, a read-only or full filesystem) are in tests/test_faults.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xlang import hookimpl, plugins

SHA = "0" * 64


@dataclass
class Case:
    """`args` may hold `{tmp}`; `setup(tmp)` prepares files first; `says` must appear in the error line."""

    name: str
    args: list[str]
    says: str
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None


def _write(relative: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")

    return setup


def _both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for step in steps:
            step(tmp)

    return setup


def _run_folder(manifest: object) -> Callable[[Path], None]:
    """A run folder whose manifest is `manifest` (JSON), as a hand-edited or foreign folder would be."""
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    return _write("run/manifest.json", text)


def _model_folder(relative: str, files: dict[str, bytes]) -> Callable[[Path], None]:
    config = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode()
    return _both(*(_write(f"{relative}/{name}", data) for name, data in {"config.json": config, **files}.items()))


def _truncated_copy_of_smollm2(tmp: Path) -> None:
    """The converted SmolLM2's config and tokenizer next to the first kilobyte of its weights."""
    source = Path(os.environ["XLANG_CACHE_DIR"]) / "models" / "smollm2-135m"
    target = tmp / "truncated"
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)
    with (source / "model.safetensors").open("rb") as handle:
        (target / "model.safetensors").write_bytes(handle.read(1024))


def _image(tmp: Path) -> None:
    from PIL import Image

    (tmp / "images").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp / "images" / "red.png")


KO_RUN = {"recipe": "x-llava", "language": "ko", "companions": ["en"], "base_model": "smollm2-135m", "stages": {}}
"""The manifest of a run that the EXTEND arguments below would continue."""

EXTEND = ["extend", "--lang", "ko", "--out", "{tmp}/run"]
"""The start of a run that would work: each case adds one bad input."""

CASES = [
    # --- command line --------------------------------------------------------------------------------------
    Case("unknown command", ["frobnicate"], "No such command"),
    Case("unknown option", ["extend", "--frobnicate"], "No such option"),
    Case("option without its value", ["extend", "--lang"], "requires an argument"),
    Case("unknown root option", ["--frobnicate", "languages"], "No such option"),
    Case("bad --format", ["languages", "--format", "xml"], "xml"),
    Case("missing required option", ["corpus", "stats"], "--lang"),
    # --- languages, recipes, stages ------------------------------------------------------------------------
    Case("unknown language", ["extend", "--lang", "xx", "--out", "{tmp}/run"], "xx"),
    Case("no language", ["extend", "--out", "{tmp}/run"], "language"),
    Case("unknown companion", [*EXTEND, "--companions", "xx"], "xx"),
    Case("unknown recipe", [*EXTEND, "--recipe", "nope"], "nope"),
    Case("unknown --until", [*EXTEND, "--until", "nope"], "nope"),
    Case("WORLD_SIZE without a launcher", EXTEND, "MASTER_ADDR", env={"WORLD_SIZE": "2"}),
    Case("WORLD_SIZE not a number", EXTEND, "WORLD_SIZE='two'", env={"WORLD_SIZE": "two"}),
    Case("unknown initializer", [*EXTEND, "--initializer", "nope"], "nope"),
    Case("unknown expander", [*EXTEND, "--expander", "nope"], "nope"),
    Case("unknown candidate source", [*EXTEND, "--source", "nope"], "nope"),
    Case("--budget not a number", [*EXTEND, "--budget", "many"], "--budget"),
    Case("--budget zero", [*EXTEND, "--budget", "0"], "budget"),
    Case("--budget negative", [*EXTEND, "--budget", "-5"], "budget"),
    Case("--steps negative", [*EXTEND, "--steps", "-1"], "steps"),
    Case("--seq-len zero", [*EXTEND, "--seq-len", "0"], "seq_len"),
    Case("--mix unknown language", [*EXTEND, "--mix", "ko=0.5,xx=0.5"], "xx"),
    Case("--mix weight not finite", [*EXTEND, "--mix", "ko=nan,en=0.5"], "nan"),
    Case("--mix infinite weight", [*EXTEND, "--mix", "ko=inf,en=1"], "inf"),
    Case("--mix malformed", [*EXTEND, "--mix", "ko:0.5"], "mix"),
    Case("--budget too big for an int", [*EXTEND, "--budget", "1" + "0" * 30], "budget"),
    Case("--vit-data missing file", [*EXTEND, "--vit-data", "{tmp}/missing.jsonl"], "missing.jsonl"),
    Case("--init-text missing file", [*EXTEND, "--init-text", "{tmp}/missing.txt"], "missing.txt"),
    Case(
        "--init-text not text",
        [*EXTEND, "--init-text", "{tmp}/sample.pdf"],
        "sample.pdf",
        setup=_write("sample.pdf", "x"),
    ),
    Case("--init-text a stream", [*EXTEND, "--init-text", "hf://wikimedia/wikipedia"], "only local files"),
    Case("--init-text empty", [*EXTEND, "--init-text", "{tmp}/empty.txt"], "no text", setup=_write("empty.txt", "\n")),
    Case(
        "eval run unknown suite",
        ["eval", "run", "--model", "{tmp}", "--lang", "ko", "--suite", "nope", "--out", "{tmp}/ev"],
        "nope",
    ),
    Case(
        "eval run --bench missing",
        ["eval", "run", "--model", "{tmp}", "--lang", "ko", "--bench", "{tmp}/none.tsv", "--out", "{tmp}/ev"],
        "none.tsv",
    ),
    Case(
        "eval compare without a judge",
        ["eval", "compare", "--models", "{tmp}", "{tmp}", "--lang", "ko", "--out", "{tmp}/cmp"],
        "judge",
    ),
    Case("eval report on an empty folder", ["eval", "report", "{tmp}"], "results.json"),
    Case("--mix negative weight", [*EXTEND, "--mix", "ko=-1,en=1"], "mix"),
    Case("--vit-data-weight not a number", [*EXTEND, "--vit-data-weight", "lots"], "vit-data-weight"),
    # --- settings: TOML, environment -----------------------------------------------------------------------
    Case("TOML not valid", ["--config", "{tmp}/x.toml", *EXTEND], "x.toml", setup=_write("x.toml", "language = [")),
    Case("TOML not UTF-8", ["--config", "{tmp}/x.toml", *EXTEND], "x.toml", setup=_write("x.toml", b"a = '\xff\xfe'")),
    Case("TOML unknown setting", ["--config", "{tmp}/x.toml", *EXTEND], "colour", setup=_write("x.toml", "colour = 1")),
    Case(
        "TOML wrong type",
        ["--config", "{tmp}/x.toml", *EXTEND],
        "progress_every_s",
        setup=_write("x.toml", "progress_every_s = 'often'"),
    ),
    Case(
        "TOML unknown stage knob",
        ["--config", "{tmp}/x.toml", *EXTEND],
        "colour",
        setup=_write("x.toml", "[stages.expand]\ncolour = 1\n"),
    ),
    Case(
        "TOML unknown stage",
        ["--config", "{tmp}/x.toml", *EXTEND],
        "nope",
        setup=_write("x.toml", "[stages.nope]\nbudget = 1\n"),
    ),
    Case(
        "TOML unknown initializer option",
        ["--config", "{tmp}/x.toml", *EXTEND],
        "colour",
        setup=_write("x.toml", "[stages.init]\noptions = { colour = 1 }\n"),
    ),
    Case("--config is a folder", ["--config", "{tmp}", *EXTEND], "{tmp}"),
    Case("XLANG_CONFIG missing file", EXTEND, "missing.toml", env={"XLANG_CONFIG": "{tmp}/missing.toml"}),
    Case("XLANG_STAGES not JSON", EXTEND, "stages", env={"XLANG_STAGES": "not json"}),
    Case("XLANG_STAGES a JSON list", EXTEND, "stages", env={"XLANG_STAGES": "[1, 2]"}),
    Case("XLANG_STAGES__EXPAND__BUDGET not a number", EXTEND, "budget", env={"XLANG_STAGES__EXPAND__BUDGET": "x"}),
    Case("XLANG_CORPUS_KIND unknown", EXTEND, "corpus_kind", env={"XLANG_CORPUS_KIND": "cloud"}),
    Case("XLANG_PROGRESS_EVERY_S negative", EXTEND, "progress_every_s", env={"XLANG_PROGRESS_EVERY_S": "-1"}),
    Case("XLANG_COMPANIONS not JSON", EXTEND, "companions", env={"XLANG_COMPANIONS": "en,zh"}),
    Case("XLANG_DATA not JSON", ["data", "stats", "{tmp}/d.jsonl"], "data", env={"XLANG_DATA": "not json"}),
    # --- paths ---------------------------------------------------------------------------------------------
    Case("--out is a file", ["extend", "--lang", "ko", "--out", "{tmp}/file"], "file", setup=_write("file", "x")),
    Case(
        "--out under a file", ["extend", "--lang", "ko", "--out", "{tmp}/file/run"], "file", setup=_write("file", "x")
    ),
    Case("--out not writable", ["extend", "--lang", "ko", "--out", "/sys/xlang-run"], "/sys/xlang-run"),
    Case("cache dir is a file", EXTEND, "{tmp}/file", env={"XLANG_CACHE_DIR": "{tmp}/file"}, setup=_write("file", "x")),
    Case("cache dir not writable", EXTEND, "/sys/xlang-cache", env={"XLANG_CACHE_DIR": "/sys/xlang-cache"}),
    Case(
        "runs dir is a file",
        ["extend", "--lang", "ko"],
        "{tmp}/file",
        env={"XLANG_RUNS_DIR": "{tmp}/file"},
        setup=_write("file", "x"),
    ),
    Case("--base missing folder", [*EXTEND, "--base", "{tmp}/nowhere"], "nowhere"),
    Case(
        "--base folder without config", [*EXTEND, "--base", "{tmp}/empty"], "config.json", setup=_write("empty/x", "")
    ),
    Case(
        "model folder holds only pickle weights",
        ["eval", "bpc", "--model", "{tmp}/pickled", "--lang", "ko"],
        "safetensors",
        setup=_model_folder("pickled", {"pytorch_model.bin": b"\x80\x04N."}),
    ),
    # --- run folders: manifests of the wrong shape ---------------------------------------------------------
    Case("manifest not JSON", EXTEND, "manifest.json", setup=_run_folder("{oops")),
    Case("manifest a JSON list", EXTEND, "manifest.json", setup=_run_folder([1, 2])),
    Case("manifest without stages", EXTEND, "manifest.json", setup=_run_folder({"recipe": "x-llava"})),
    Case(
        "manifest stage record not an object",
        EXTEND,
        "manifest.json",
        setup=_run_folder({**KO_RUN, "stages": {"expand": 3}}),
    ),
    Case("manifest of another language", EXTEND, "language", setup=_run_folder({**KO_RUN, "language": "zh"})),
    Case("manifest config not an object", EXTEND, "manifest.json", setup=_run_folder({**KO_RUN, "config": [1]})),
    Case("manifest is a folder", EXTEND, "manifest.json", setup=_write("run/manifest.json/x", "")),
    # --- commands around the recipe ------------------------------------------------------------------------
    Case(
        "tokenizer expand --out is a file",
        ["tokenizer", "expand", "--lang", "ko", "--out", "{tmp}/file"],
        "file",
        setup=_write("file", "x"),
    ),
    Case(
        "tokenizer expand zero budget",
        ["tokenizer", "expand", "--lang", "ko", "--budget", "0", "--out", "{tmp}/tok"],
        "budget",
    ),
    Case("tokenizer expand unknown language", ["tokenizer", "expand", "--lang", "xx", "--out", "{tmp}/tok"], "xx"),
    Case(
        "tokenizer stats missing folder",
        ["tokenizer", "stats", "--lang", "ko", "--tokenizer", "{tmp}/nowhere"],
        "nowhere",
    ),
    Case(
        "tokenizer stats folder without a tokenizer",
        ["tokenizer", "stats", "--lang", "ko", "--tokenizer", "{tmp}/empty"],
        "empty",
        setup=_write("empty/x", ""),
    ),
    Case("eval bpc missing model", ["eval", "bpc", "--model", "{tmp}/nowhere", "--lang", "ko"], "nowhere"),
    Case(
        "eval bpc truncated safetensors",
        ["eval", "bpc", "--model", "{tmp}/truncated", "--lang", "ko"],
        "truncated",
        setup=_truncated_copy_of_smollm2,
    ),
    Case("eval bpc unknown language", ["eval", "bpc", "--model", "smollm2-135m", "--lang", "xx"], "xx"),
    Case("corpus stats unknown language", ["corpus", "stats", "--lang", "xx"], "xx"),
    Case("assets fetch unknown language", ["assets", "fetch", "--lang", "xx", "--no-models"], "xx"),
    Case("data stats missing file", ["data", "stats", "{tmp}/missing.jsonl"], "missing.jsonl"),
    Case("data stats a folder", ["data", "stats", "{tmp}"], "{tmp}"),
    Case(
        "data stats not JSON lines", ["data", "stats", "{tmp}/d.jsonl"], "d.jsonl", setup=_write("d.jsonl", "{oops\n")
    ),
    Case(
        "data stats binary file",
        ["data", "stats", "{tmp}/d.jsonl"],
        "d.jsonl",
        setup=_write("d.jsonl", b"\xff\xfe\x00"),
    ),
    Case(
        "data stats rows not records",
        ["data", "stats", "{tmp}/d.jsonl"],
        "d.jsonl",
        setup=_write("d.jsonl", "[1]\n3\n"),
    ),
    Case(
        "data generate unknown teacher",
        [
            "data",
            "generate",
            "--langs",
            "ko",
            "--images",
            "{tmp}/images",
            "--out",
            "{tmp}/o.jsonl",
            "--teacher",
            "nope",
        ],
        "nope",
        setup=_image,
    ),
    Case(
        "data generate unknown language",
        ["data", "generate", "--langs", "xx", "--images", "{tmp}", "--out", "{tmp}/o.jsonl"],
        "xx",
    ),
    Case(
        "data generate missing images",
        ["data", "generate", "--langs", "ko", "--images", "{tmp}/nowhere", "--out", "{tmp}/o.jsonl"],
        "nowhere",
    ),
    Case(
        "data generate zero concurrency",
        ["data", "generate", "--langs", "ko", "--images", "{tmp}", "--out", "{tmp}/o.jsonl", "--concurrency", "0"],
        "concurrency",
    ),
    Case(
        "data generate unknown teacher option",
        ["--config", "{tmp}/x.toml", "data", "generate", "--langs", "ko", "--images", "{tmp}/images"]
        + ["--out", "{tmp}/o.jsonl", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"],
        "colour",
        setup=_both(_image, _write("x.toml", "[teacher_options]\ncolour = 1\n")),
    ),
    Case("serve missing model", ["serve", "--model", "{tmp}/nowhere"], "nowhere"),
    Case("serve bad port", ["serve", "--model", "{cache}/models/smollm2-135m", "--port", "70000"], "port"),
    Case("serve bad faults", ["serve", "--model", "{cache}/models/smollm2-135m", "--faults", "lots"], "faults"),
]


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def assert_one_error_line(status: int, stderr: str, says: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, f"exit status {status}, stderr:\n{stderr}"
    assert len(lines) == 1 and lines[0].startswith("error:"), f"not one error line:\n{stderr}"
    assert "Traceback" not in stderr
    assert says.lower() in lines[0].lower(), f"{says!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_input_is_one_line_and_exit_2(case: Case, xlang_cli, tmp_path: Path) -> None:
    fill = {"tmp": str(tmp_path), "cache": os.environ["XLANG_CACHE_DIR"]}
    if case.setup is not None:
        case.setup(tmp_path)
    before = _tree(tmp_path)
    status, _, stderr = xlang_cli(
        *[arg.format(**fill) for arg in case.args], env={key: value.format(**fill) for key, value in case.env.items()}
    )
    assert_one_error_line(status, stderr, case.says.format(**fill))
    assert _tree(tmp_path) == before, "a failed command left files behind"


def test_the_list_holds_at_least_sixty_distinct_cases() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 60


class RaisingPlugin:
    """A third-party plugin whose language hook breaks."""

    @hookimpl
    def register_languages(self, register: object) -> None:
        raise RuntimeError("the language table is missing")


def test_a_plugin_hook_that_raises_names_the_plugin_and_the_hook(fresh_plugins, xlang_cli) -> None:
    plugins.register_plugin(RaisingPlugin(), "xlang-broken")
    status, _, stderr = xlang_cli("languages")
    line = assert_one_error_line(status, stderr, "xlang-broken")
    assert "register_languages" in line and "the language table is missing" in line


def test_an_unreadable_config_file_is_one_line(xlang_cli, tmp_path: Path) -> None:
    """A TOML file the process may not read (as root every file is readable: then a folder stands in)."""
    config = tmp_path / "x.toml"
    config.write_text("language = 'ko'\n")
    config.chmod(0)
    if os.access(config, os.R_OK):
        config.chmod(stat.S_IRUSR | stat.S_IWUSR)
        config.unlink()
        config.mkdir()
    status, _, stderr = xlang_cli("--config", str(config), "extend", "--out", str(tmp_path / "run"))
    assert_one_error_line(status, stderr, "x.toml")
    assert not (tmp_path / "run").exists()
