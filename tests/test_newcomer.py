"""What a newcomer meets from a fresh clone, run the way they run it: one cache whether they go through
`make` or the venv, a hook trace that names the plugins, tables that survive a pipe, plain progress lines
in a log, the same stage lines from Python, Ctrl-C that says how to resume (and resuming), and an
expansion that explains a short count.

The run tests use the third-party test languages and tiny base of tests/test_recipe_e2e.py.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_recipe_e2e import testlang  # noqa: F401  (the fixture: test languages, their data, a tiny base)

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
XLANG_MAIN = [sys.executable, "-c", "from xlang.cli import main; main()"]


def _clean_env(home: Path) -> dict[str, str]:
    """A user's shell: no xlang settings, no terminal width, a home of its own (so its cache is known)."""
    dropped = ("COLUMNS", "PYTHONUNBUFFERED")  # a pipe gets Python's default buffering, as for a user
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLANG_", "XDG_", "HF_")) and k not in dropped}
    env["HOME"] = str(home)
    return env


def _readme_commands(prefix: str) -> list[list[str]]:
    """The commands of the README's "Using it" block that start with `prefix`, comments dropped."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Using it\n\n```bash\n(.*?)```", readme, re.S)
    assert block, "README.md has no 'Using it' bash block"
    return [line.split("#")[0].split() for line in block.group(1).splitlines() if line.startswith(prefix)]


# --- one cache ---------------------------------------------------------------------------------------


def test_make_and_the_venv_resolve_the_same_cache(tmp_path: Path) -> None:
    """`xlang assets where` from the README, once in the Makefile's environment and once as a user after
    `source .venv/bin/activate` in another folder, and from Python: one folder, so nothing is fetched twice."""
    (commands,) = _readme_commands("xlang assets where")
    assert "source .venv/bin/activate" in (REPO / "README.md").read_text(encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home)
    as_json = [*commands[1:], "--format", "json"]

    def through_make(extra: dict[str, str]) -> dict:
        probe = f"probe:\n\t$(VENV)/bin/xlang {' '.join(as_json)}\n"
        done = subprocess.run(
            ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "probe"],
            input=probe, cwd=REPO, env={**env, **extra}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def through_venv(extra: dict[str, str], folder: Path) -> dict:
        folder.mkdir(exist_ok=True)
        shell = {**env, **extra, "VIRTUAL_ENV": str(VENV_BIN.parent), "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}"}
        done = subprocess.run(["xlang", *as_json], cwd=folder, env=shell, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    python = subprocess.run(
        [sys.executable, "-c", "from xlang.settings import load_settings; print(load_settings().cache_dir)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    made, used = through_make({}), through_venv({}, tmp_path / "elsewhere")
    assert made["cache_dir"] == used["cache_dir"] == python.stdout.strip() == str(home / ".cache" / "xlang")
    assert made["set_by"] == used["set_by"] == "default"
    assert not (home / ".cache" / "xlang").exists()  # where never fetches

    moved = {"XLANG_CACHE_DIR": str(tmp_path / "shared-cache")}
    made, used = through_make(moved), through_venv(moved, tmp_path / "another")
    assert made["cache_dir"] == used["cache_dir"] == str(tmp_path / "shared-cache")
    assert made["set_by"] == "environment variable XLANG_CACHE_DIR"


def test_where_lists_what_the_cache_holds_with_sizes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "models" / "m").mkdir(parents=True)
    (cache / "models" / "m" / "weights.safetensors").write_bytes(b"\0" * 3000)
    (cache / "corpora").mkdir()
    (cache / "corpora" / "train.jsonl").write_text("x" * 500)
    env = {**_clean_env(tmp_path), "XLANG_CACHE_DIR": str(cache)}
    found = json.loads(
        subprocess.run([*XLANG_MAIN, "assets", "where", "--format", "json"], env=env, capture_output=True, text=True,
                       timeout=120, check=True).stdout
    )  # fmt: skip
    assert {entry["name"]: entry["bytes"] for entry in found["entries"]} == {"corpora": 500, "models": 3000}
    assert found["total_bytes"] == 3500 and found["hf_home"] == str(cache / "hf")
    table = subprocess.run([*XLANG_MAIN, "assets", "where"], env=env, capture_output=True, text=True, timeout=120)
    assert "converted base models" in table.stdout and "3.0 kB" in table.stdout


# --- tracing and listings ----------------------------------------------------------------------------


def test_trace_names_the_plugin_of_every_hook_call(tmp_path: Path) -> None:
    env = {**_clean_env(tmp_path), "XLANG_TRACE_HOOKS": "1"}
    traced = subprocess.run([*XLANG_MAIN, "languages"], env=env, capture_output=True, text=True, timeout=120)
    assert traced.returncode == 0, traced.stderr
    for code in ("ko", "zh", "en"):
        assert f"xlang hook register_languages(register): plugin '{code}' registered '{code}'" in traced.stderr
    assert "register_recipes(register): plugin 'recipes' registered 'x-llava'" in traced.stderr
    assert "register_commands(cli)" in traced.stderr


def test_trace_says_which_plugin_answered_a_firstresult_hook(monkeypatch, capsys, tmp_path: Path) -> None:
    from xlang import plugins

    monkeypatch.setenv("XLANG_TRACE_HOOKS", "1")
    pm = plugins.make_plugin_manager()
    word_list = tmp_path / "words.txt"
    word_list.write_text("word\n")
    assert pm.hook.fetch_file(uri=word_list.as_uri(), cache_dir=tmp_path) == word_list
    err = capsys.readouterr().err
    assert "fetch_file(uri, cache_dir): answered by plugin 'xlang.builtin.files'" in err
    assert "asked in this order: 'debian'" in err  # the plugins asked before it passed


def test_listings_piped_show_every_name_whole_and_as_json(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    command = " ".join(XLANG_MAIN[:2]) + ' "' + XLANG_MAIN[2] + '"'

    def piped(*args: str) -> str:
        done = subprocess.run(
            ["bash", "-c", f"{command} {' '.join(args)} | cat"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    infos = json.loads(piped("plugins", "--format", "json"))
    table = piped("plugins")
    assert {info["name"] for info in infos} >= {"ko", "zh", "en", "debian", "recipes", "xlang.builtin.corpus_sources"}
    for info in infos:
        assert re.search(rf"│ {re.escape(info['name'])} +│", table), info["name"]
    languages = json.loads(piped("languages", "--format", "json"))
    listed = piped("languages")
    for language in languages:
        assert re.search(rf"│ {re.escape(language['plugin'])} +│\n", listed), language["plugin"]
        for corpus in language["corpora"]:
            assert f"{corpus['name']}: " in listed, corpus["name"]
    recipes = json.loads(piped("recipes", "--format", "json"))
    assert recipes[0]["name"] == "x-llava" and recipes[0]["stages"][0] == "expand"
    assert {"name": "budget", "sets": ["expand.budget"], "help": "expand: number of new vocabulary entries."} in (
        recipes[0]["flags"]
    )


def test_extend_help_shows_the_out_default_and_config(tmp_path: Path) -> None:
    shown = subprocess.run([*XLANG_MAIN, "extend", "--help"], env=_clean_env(tmp_path), capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    text = " ".join(shown.stdout.split())
    assert "--out DIRECTORY" in text and "[default: RUNS_DIR/RECIPE-LANG, e.g. runs/x-llava-ko]" in text
    assert "--config FILE" in text and "--budget N" in text and "[default: 8000]" in text
    assert "exit status 130" in text


# --- runs: progress, Python, Ctrl-C --------------------------------------------------------------------

# 12 steps: after the test reads "step 2" the run still has 10 to go, so SIGINT lands mid-stage however
# fast the machine
RUN_CONFIG = """
progress_every_s = 0

[stages.expand]
budget = 120

[stages.pretrain]
steps = 12
seq_len = 64
log_every = 1
eval_every = 0
save_every = 1
tensorboard = false
"""


@pytest.fixture
def run_env(testlang: dict[str, Path], test_cache_dir: Path, tmp_path: Path) -> dict[str, str]:  # noqa: F811
    config = tmp_path / "xlang.toml"
    config.write_text(RUN_CONFIG)
    env = _clean_env(tmp_path)
    env.update(
        XLANG_CACHE_DIR=str(test_cache_dir),
        XLANG_TESTLANG_DATA=str(testlang["data"]),
        XLANG_CONFIG=str(config),
        PYTHONPATH=os.pathsep.join([str(testlang["site"]), str(REPO)]),
    )
    return env


class Lines:
    """A child's merged output, read line by line on a thread, so the test can wait for a line with a
    deadline instead of sleeping."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s:\n{''.join(self.seen)}")

    def rest(self) -> str:
        while (line := self._queue.get(timeout=60)) is not None:
            self.seen.append(line)
        return "".join(self.seen)


@pytest.mark.slow
def test_python_run_then_ctrl_c_then_resume_with_plain_progress_lines(
    testlang: dict[str, Path],  # noqa: F811
    run_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """One run folder, three entries, as a user would go:

    1. From Python (after importing transformers, as a notebook does) up to `init`: the CLI's stage lines,
       no library progress bars.
    2. `xlang extend --until pretrain` with output to a pipe: finished stages skipped, plain progress lines
       while pretraining runs; SIGINT at the second step exits 130, the stage `interrupted`, and the message
       gives the command to run.
    3. That command resumes pretraining from its checkpoint and finishes.
    """
    run = tmp_path / "run"
    script = (
        "import transformers\n"
        "from xlang.runner import extend\n"
        f"extend('qaa', base_model={str(testlang['base'])!r}, out={str(run)!r}, until='init')\n"
    )
    python = subprocess.run([sys.executable, "-c", script], env=run_env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert python.returncode == 0, python.stdout + python.stderr
    for stage in ("expand", "init"):
        assert re.search(rf"^▶ running {stage} \(started \d\d:\d\d:\d\d\)$", python.stdout, re.M), python.stdout
        assert re.search(rf"^✓ done {stage} after \d+s \(\d\d:\d\d:\d\d\)$", python.stdout, re.M), python.stdout
    assert "Loading weights" not in python.stderr + python.stdout and "it/s]" not in python.stderr, python.stderr

    extend = ["extend", "--lang", "qaa", "--base", str(testlang["base"]), "--out", str(run), "--until", "pretrain"]
    # as a terminal's Ctrl-C reaches a foreground command: with SIGINT at its default, whatever this test
    # inherited (a shell that starts a job in the background hands it SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler at all)
    process = subprocess.Popen(
        [*XLANG_MAIN, *extend],
        env=run_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = Lines(process)
    try:
        lines.wait_for(r"^▶ running pretrain \(started \d\d:\d\d:\d\d\)", timeout_s=300)
        first = lines.wait_for(r"pretrain:\S+: step \d+/12", timeout_s=120)
        assert re.search(r"step 1/12, loss \d+\.\d+, [\d,]+ tokens/s, elapsed \dm\d\ds$", first), first
        second = lines.wait_for(r"pretrain:\S+: step 2/12", timeout_s=120)
        assert re.search(r"elapsed \dm\d\ds, ETA \dm\d\ds$", second), second
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = lines.rest()
    assert code == 130, output
    assert "↷ finished earlier expand" in output and "↷ finished earlier init" in output
    assert "✗ interrupted pretrain" in output and "Aborted!" not in output and "Traceback" not in output
    assert "To resume, run the same command again: xlang extend --lang qaa" in output
    manifest = json.loads((run / "manifest.json").read_text())
    record = manifest["stages"]["pretrain"]
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT"
    assert not (run / "pretrain").exists()

    resumed = subprocess.run(
        [*XLANG_MAIN, *extend], env=run_env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = [int(n) for n in re.findall(r"pretrain:\S+: step (\d+)/12", resumed.stdout)]
    assert steps and steps[0] > 1 and steps[-1] == 12, resumed.stdout  # from the checkpoint, not from step 0
    assert json.loads((run / "manifest.json").read_text())["stages"]["pretrain"]["status"] == "done"


# --- expansion that explains itself --------------------------------------------------------------------


def test_a_short_expansion_says_why_and_stats_show_the_floor(smollm2_dir: Path, tmp_path: Path) -> None:
    from xlang.spec import ChatBits, LanguageSpec, ScriptRange
    from xlang.tokenizer import expand_tokenizer, tokenizer_stats

    language = LanguageSpec(
        code="qaa",
        name="Testish",
        scripts=(ScriptRange(name="Hangul Syllables", start=0xAC00, end=0xD7A3),),
        chat=ChatBits(system_prompt="s"),
    )
    korean = ["한국어 문서를 편집합니다.", "표를 삽입하고 서식을 지정합니다.", "문서를 저장합니다."] * 4
    english = [f"An untranslated English paragraph number {n}." for n in range(40)]
    result = expand_tokenizer(smollm2_dir, language, korean + english, budget=4000, out_dir=tmp_path / "tok")
    assert 0 < len(result.new_token_ids) < 2000
    (short,) = [note for note in result.notes if "for a budget of 4,000" in note]
    assert "distinct pieces" in short and "the corpus is small" in short
    assert short.endswith("See docs/tokenizer.md#fewer-new-tokens-than-the-budget")
    assert "## Fewer new tokens than the budget" in (REPO / "docs" / "tokenizer.md").read_text(encoding="utf-8")
    (mostly_other,) = [note for note in result.notes if "training paragraphs" in note]
    assert "12 of 52" in mostly_other and "require=" in mostly_other

    (row,) = tokenizer_stats(tmp_path / "tok", {"qaa": korean})
    assert 0 < row.floor_tokens_per_char <= row.tokens_per_char < row.base_tokens_per_char


def test_corpus_stats_warns_when_the_target_share_is_low() -> None:
    from xlang_recipes.commands import low_share_warnings

    from xlang.data import SplitStats
    from xlang.spec import ChatBits, LanguageSpec, ScriptRange

    hindi_like = LanguageSpec(
        code="qaa",
        name="Testish",
        scripts=(ScriptRange(name="Devanagari", start=0x0900, end=0x097F),),
        chat=ChatBits(system_prompt="s"),
    )
    mostly_english = {"train": SplitStats(100, 10, 12_000, 10_000, 600), "validation": SplitStats(5, 1, 600, 500, 30)}
    (warning,) = low_share_warnings("help-hi", mostly_english, hindi_like)
    assert "6.0%" in warning and "require=devanagari" in warning and "docs/plugin-reference.md" in warning
    translated = {"train": SplitStats(100, 10, 12_000, 10_000, 9_000)}
    assert low_share_warnings("help-hi", translated, hindi_like) == []


def test_pin_prints_a_uri_the_plugin_accepts_with_a_literal_plus(tmp_path: Path) -> None:
    """`xlang corpus pin` reads apt's index (as the plugin's fallback does); the URI keeps `+` as `+`."""
    from xlang_debian.build import parse_debian_uri

    done = subprocess.run([*XLANG_MAIN, "corpus", "pin", "libreoffice-help-ko", "--require", "hangul"],
                          env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (uri,) = done.stdout.splitlines()
    assert uri.startswith("debian://libreoffice-help?deb=pool/main/libr/libreoffice/libreoffice-help-ko_")
    assert uri.endswith("&require=hangul") and "+deb" in uri and "%2B" not in uri
    (pin,) = parse_debian_uri(uri).pins
    assert "+" in pin.filename and len(pin.sha256) == 64
    assert "# pinned: libreoffice-help-ko " in done.stderr
    from xlang_debian.pin import pin_uri

    from xlang.errors import XlangError

    with pytest.raises(XlangError, match="apt names no package 'libreoffice-help-qqq'"):
        pin_uri(["libreoffice-help-qqq"], lookup=lambda package: None)  # what apt answers for an unknown name


def test_the_recipes_page_imports_what_its_code_uses() -> None:
    """Every name docs/recipes.md's Python uses is imported or defined on the page, and every import works."""
    import builtins
    import symtable

    page = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```python\n(.*?)```", page, re.S))
    module = symtable.symtable(code, "docs/recipes.md", "exec")
    defined = {symbol.get_name() for symbol in module.get_symbols() if symbol.is_assigned() or symbol.is_imported()}
    missing: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            outside = table is module or symbol.is_global() or symbol.is_free()
            name = symbol.get_name()
            if outside and symbol.is_referenced() and name not in defined and not hasattr(builtins, name):
                missing.add(name)
        for child in table.get_children():
            walk(child)

    walk(module)
    assert not missing, f"docs/recipes.md uses {sorted(missing)} without importing them"
    for line in code.splitlines():
        if line.startswith(("from ", "import ")):
            exec(line, {})  # the page's own import lines, nothing else


def test_plain_progress_prints_at_the_first_step_then_every_interval_and_at_the_end() -> None:
    import io

    from xlang.train.progress import StepProgress

    now = [0.0]
    out = io.StringIO()
    with StepProgress("pretrain:lora", 100, 0, plain=True, every_s=30, stream=out, clock=lambda: now[0]) as progress:
        for step, at in ((1, 2.0), (2, 20.0), (3, 33.0), (4, 40.0), (100, 300.0)):
            now[0] = at
            progress.step(step, loss=2.5, tokens_per_s=1234.0)
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "  pretrain:lora: step 1/100",
        "  pretrain:lora: step 3/100",
        "  pretrain:lora: step 100/100",
    ]
    # the ETA counts from the first step, so what came before it (loading, the step-0 evaluation) is not in it
    assert "ETA" not in lines[0]
    assert lines[1] == "  pretrain:lora: step 3/100, loss 2.500, 1,234 tokens/s, elapsed 0m33s, ETA 25m04s"
    assert "ETA" not in lines[2]
