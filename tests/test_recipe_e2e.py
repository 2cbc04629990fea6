"""The X-LLaVA recipe end to end through `xlang extend`, on tiny offline assets: a third-party plugin
(tests/third_party/testlang_plugin.py, installed into a folder on PYTHONPATH with its own entry point)
supplies the languages and a tiny vision tower; the base is a tiny random Llama with SmolLM2's real
tokenizer; the text and the photos are real. All six stages run; a run killed in the middle resumes;
the final LLaVA folder loads and generates in plain transformers; the report's BPC equals `xlang eval bpc`.
The A/B recipe runs under torchrun with DeepSpeed, both arms sharded over two processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "tests" / "third_party" / "testlang_plugin.py"
STAGES = ["expand", "init", "pretrain", "align", "vit", "evaluate"]

CONFIG = """
[stages.expand]
budget = 120

[stages.pretrain]
steps = 2
seq_len = 64
eval_every = 2
save_every = 1
eval_max_chars = 1500
tensorboard = false

[stages.align]
assemble = { vision_tower = "tiny-clip", image_size = 28 }
train = { steps = 2, eval_samples = 2 }

[stages.vit]
train = { steps = 2, eval_samples = 2 }
report_images = 1

[stages.evaluate]
max_chars = 1500
max_tokens = 8
"""


def _paragraphs(cache: Path, code: str, count: int) -> list[dict[str, str]]:
    """The first `count` records of a shipped language's cached training split (built on first use)."""
    from xlang import plugins
    from xlang.resolve import Resolver
    from xlang.settings import load_settings

    resolver = Resolver(load_settings(cache_dir=cache), plugins.make_plugin_manager())
    dataset = resolver.dataset(resolver.language(code), "train")
    return [{"text": r["text"], "doc": r["doc"]} for r in dataset.select(range(count))]


def _vit_records(code: str, source: str, count: int) -> list[str]:
    """Records of a shipped language's seed set, relabelled as the test language's."""
    rows = [json.loads(line) for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [row for row in rows if row.get("split", "train") == "heldout"][:2]
    kept += [row for row in rows if row.get("split", "train") == "train"][:count]
    return [json.dumps({**row, "id": f"{code}-{row['id']}", "lang": code}, ensure_ascii=False) for row in kept]


@pytest.fixture(scope="module")
def testlang(tmp_path_factory: pytest.TempPathFactory, test_cache_dir: Path) -> dict[str, Path]:
    """A site folder holding the third-party plugin and its entry point, its data, and a tiny base model."""
    from tiny_models import tiny_llama
    from transformers import AutoTokenizer

    from xlang import plugins
    from xlang.assets.models import ensure_smollm2

    root = tmp_path_factory.mktemp("testlang")
    site, data, base = root / "site", root / "data", root / "tiny-base"
    for folder in (site, data):
        folder.mkdir()
    shutil.copy(PLUGIN, site / "testlang_plugin.py")
    info = site / "xlang_testlang-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xlang-testlang\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[xlang]\ntestlang = testlang_plugin\n")

    for code, shipped, count in (("qaa", "ko", 400), ("qab", "en", 300)):
        rows = _paragraphs(test_cache_dir, shipped, count)
        (data / f"{code}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        seed = plugins.get_language(shipped, plugins.make_plugin_manager()).vit_data[0].removeprefix("file://")
        (data / f"{code}_vit.jsonl").write_text("\n".join(_vit_records(code, seed, 8)) + "\n")
        smoke = Path(seed).parent / "eval" / "smoke"
        for name, suffix in (
            ("open_ended", "open.jsonl"),
            ("multiple_choice", "choice.tsv"),
            ("short_answer", "short.jsonl"),
        ):
            source = next(smoke.glob(f"{name}.*"))
            # three lines of each set (a TSV's header and two rows): every metric, a third of the answers to time
            lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:3]
            (data / f"{code}_{suffix}").write_text("".join(lines), encoding="utf-8")

    tokenizer = AutoTokenizer.from_pretrained(str(ensure_smollm2(test_cache_dir)))
    model = tiny_llama(len(tokenizer), tied=True)
    model.config.bos_token_id, model.config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    model.config.max_position_embeddings = 1024  # rotary: room for an image, a question and a reference reply
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    (root / "xlang.toml").write_text(CONFIG)
    return {"site": site, "data": data, "base": base, "config": root / "xlang.toml"}


@pytest.fixture
def env(testlang: dict[str, Path], test_cache_dir: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("XLANG_")}
    environment.update(
        XLANG_CACHE_DIR=str(test_cache_dir),
        XLANG_TESTLANG_DATA=str(testlang["data"]),
        XLANG_CONFIG=str(testlang["config"]),
        PYTHONPATH=os.pathsep.join([str(testlang["site"]), str(REPO)]),
    )
    return environment


def _xlang(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from xlang.cli import main; main()", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_all_six_stages_run_resume_after_a_kill_and_load_in_plain_transformers(
    testlang: dict[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # generated data (the format `xlang data generate` writes) joins the languages' seed records, drawn twice
    generated = tmp_path / "generated.jsonl"
    seed = [json.loads(line) for line in (testlang["data"] / "qaa_vit.jsonl").read_text().splitlines()]
    extra = [{**row, "id": f"gen-{row['id']}", "origin": "native"} for row in seed if row.get("split") != "heldout"][:4]
    generated.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in extra))
    extend = ["extend", "--lang", "qaa", "--base", str(testlang["base"]), "--out", str(run)]
    extend += ["--vit-data", str(generated), "--vit-data-weight", "2"]

    # 1. killed while pretraining: the stages before it stay finished, nothing else claims to be
    command = [sys.executable, "-c", "from xlang.cli import main; main()", *extend]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    checkpoint_seen = False
    while process.poll() is None and time.monotonic() < deadline:
        # the first pretraining checkpoint: the stage is half done
        if any((run / ".pretrain.work").glob("stages/*/checkpoints/*")):
            checkpoint_seen = True
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    output = process.communicate(timeout=60)[0].decode()
    assert checkpoint_seen, output
    manifest = json.loads((run / "manifest.json").read_text())
    assert [name for name in STAGES if manifest["stages"].get(name, {}).get("status") == "done"] == ["expand", "init"]
    assert not (run / "pretrain").exists()

    # 2. the same command resumes: expand and init are skipped, every stage finishes
    resumed = _xlang(*extend, env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(r"finished earlier\s+expand", resumed.stdout) and re.search(
        r"finished earlier\s+init", resumed.stdout
    )
    assert "running pretrain" in resumed.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert [manifest["stages"][name]["status"] for name in STAGES] == ["done"] * 6
    assert manifest["language"] == "qaa" and manifest["companions"] == ["qab"]
    assert manifest["final_model"] == "vit/model"
    # resolved values, never None: the language's default initializer and its options
    assert manifest["config"]["init"]["initializer"] == "subword-freq"
    assert manifest["config"]["expand"]["candidate_sources"] == ["corpus-bpe"]
    assert manifest["stages"]["align"]["metrics"]["steps"] == 2
    for stage in ("align", "vit"):
        assert manifest["config"][stage]["extra_data"] == [str(generated)]
        assert manifest["config"][stage]["extra_weight"] == 2.0
    seed_train = sum(1 for row in seed if row.get("split") != "heldout") * 2  # qaa's and its companion qab's
    assert manifest["stages"]["vit"]["metrics"]["samples"] == seed_train + 2 * len(extra)
    pretrain = manifest["stages"]["pretrain"]["metrics"]
    assert pretrain["stages"][0]["steps"] == 2

    # 3. the report: one section per stage, one BPC per model and language
    report = (run / "report.md").read_text()
    sections = [line[3:] for line in report.splitlines() if line.startswith("## ")]
    assert sections == STAGES
    assert report.count("bits/char before") == 0
    metrics = manifest["stages"]["evaluate"]["metrics"]
    for model in ("base", "init", "pretrain", "align", "vit"):
        for code in ("qaa", "qab"):
            assert metrics[f"{model}/{code}/bpc"] > 0
    assert (run / "evaluate" / "bpc.png").is_file()
    # the smoke suite on the base (text only: no image) and the final model, per language, side by side
    for model in ("base", "vit"):
        for code in ("qaa", "qab"):
            assert 0 <= metrics[f"smoke/{model}/{code}/reply_language_rate"] <= 1
            assert 0 <= metrics[f"smoke/{model}/{code}/choice/circular_accuracy"] <= 1
            assert metrics[f"smoke/{model}/{code}/chars_per_s"] > 0
            results = json.loads((run / "evaluate" / "suites" / "smoke" / model / code / "results.json").read_text())
            assert results["saw_images"] is (model == "vit")
    assert (run / "evaluate" / "smoke-suite.png").is_file()
    assert "### smoke suite" in report and "replies in the language" in report

    # 4. `xlang eval bpc` gives the report's number for the same model
    scored = _xlang("eval", "bpc", "--model", str(run / "init" / "model"), "--lang", "qaa", env=env, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    row = re.search(r"│ qaa\s+│\s+[\d,]+\s+│\s+([\d.]+)\s+│\s+([\d.]+)\s+│", scored.stdout)
    assert row, scored.stdout
    assert float(row.group(2)) == pytest.approx(metrics["init/qaa/bpc"], abs=1e-4)

    # 5. the final model is a plain LLaVA folder: transformers alone loads it and answers about an image
    script = f"""
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration
folder = {str(run / manifest["final_model"])!r}
model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
processor = AutoProcessor.from_pretrained(folder)
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is this?"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=Image.new("RGB", (64, 48), "red"), text=prompt, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
print("generated", out.shape[1] - inputs["input_ids"].shape[1])
"""
    plain = {key: value for key, value in env.items() if key != "PYTHONPATH"}
    loaded = subprocess.run([sys.executable, "-c", script], env=plain, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert "generated" in loaded.stdout


def test_a_language_without_vit_data_stops_before_any_work(testlang: dict[str, Path], env: dict[str, str], tmp_path):
    """Its VIT stages would have only other languages' records: the run refuses up front, not silently."""
    run = tmp_path / "run"
    result = _xlang(
        "extend", "--lang", "qac", "--base", str(testlang["base"]), "--out", str(run), env=env, cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'qac'" in result.stderr and "vit_data" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not run.exists()
    # up to init it runs: the images are not needed there
    early = _xlang(
        "extend", "--lang", "qac", "--base", str(testlang["base"]), "--out", str(run), "--until", "init",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert early.returncode == 0, early.stdout + early.stderr


@pytest.mark.slow
def test_the_ab_recipe_under_torchrun_trains_both_arms_with_deepspeed_resumes_and_compares_them(
    testlang: dict[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """`torchrun --nproc_per_node 2 -m xlang.cli extend --recipe x-llava-ab --distributed deepspeed`: rank 0 runs
    the recipe, both ranks train with DeepSpeed ZeRO-2 (gloo on CPU) in both arms: the expanded arm (the X-LLaVA
    recipe's stages) and the base-vocabulary arm, a run of its own under `arms/`, on the same steps. Rank 0 is
    SIGKILLed after pretraining's first sharded checkpoint; the same command resumes from it. The evaluate stage
    compares the arms side by side, and one process then finds every stage of both finished. (FSDP's stages are
    tested in tests/test_distributed.py; the `distributed` setting reaches them through the same recipe code.)"""
    from launching import python_command, rank_pids

    run = tmp_path / "ab"
    extend = ["extend", "--lang", "qaa", "--recipe", "x-llava-ab", "--base", str(testlang["base"]), "--out", str(run)]
    distributed_env = {**env, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}

    def launch() -> subprocess.Popen[str]:
        command = python_command(["-m", "xlang.cli", *extend, "--distributed", "deepspeed"], processes=2)
        return subprocess.Popen(
            command,
            env=distributed_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    # rank 0, which runs the recipe and trains, is killed once pretraining's first checkpoint is complete
    first = launch()
    deadline = time.monotonic() + 600
    killed = False
    while first.poll() is None and time.monotonic() < deadline:
        if any((run / ".pretrain.work").glob("stages/*/checkpoints/step-*/meta.json")):
            os.kill(rank_pids(first.pid)[0], signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    killed_output = first.communicate(timeout=120)[0]
    assert killed and first.returncode != 0, killed_output[-3000:]
    assert not (run / "pretrain").exists()

    second = launch()
    output = second.communicate(timeout=900)[0]
    assert second.returncode == 0, output[-6000:]
    assert output.count("run folder:") == 1, output  # said once, by rank 0
    assert re.search(r"finished earlier\s+init", output), output[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(stage["status"] == "done" for stage in manifest["stages"].values()), manifest["stages"]
    assert manifest["stages"]["pretrain"]["metrics"]["stages"][0]["resumed_from"] >= 1  # from the checkpoint
    arm = json.loads((run / "arms" / "base-vocab" / "manifest.json").read_text())
    assert list(arm["stages"]) == ["pretrain", "align", "vit"]
    # every training stage of both arms ran in two processes, sharded, on the same steps
    for name, stages in (("expanded", manifest["stages"]), ("base-vocab", arm["stages"])):
        assert stages["pretrain"]["metrics"]["stages"][0]["steps"] == 2, name
        for stage in ("pretrain", "align", "vit"):
            metrics = stages[stage]["metrics"]
            assert (metrics["processes"], metrics["sharded"]) == (2, "deepspeed"), (name, stage, metrics)
    for folder in (run, run / "arms" / "base-vocab"):
        assert not list(folder.glob(".*.work")), f"a stage's work folder was left behind in {folder}"
        assert not list(folder.glob(".*-stage-*")), f"a staging folder was left behind in {folder}"

    metrics = manifest["stages"]["evaluate"]["metrics"]
    # the expanded tokenizer cuts the target language into fewer tokens; the companion's stays the same
    assert metrics["expanded/qaa/tokens_per_char"] < metrics["base-vocab/qaa/tokens_per_char"]
    assert metrics["expanded/qab/tokens_per_char"] == pytest.approx(metrics["base-vocab/qab/tokens_per_char"])
    for arm_name in ("expanded", "base-vocab"):
        assert 0 <= metrics[f"{arm_name}/qaa/reply_language_rate"] <= 1
    # the speed probe: both arms answered every open-ended smoke question, timed side by side
    for arm_name in ("expanded", "base-vocab"):
        assert metrics[f"speed/{arm_name}/qaa/tokens_per_s"] > 0
        assert 0 <= metrics[f"speed/{arm_name}/qaa/in_language_share"] <= 1
    both_replied = all(f"speed/{arm}/qaa/in_language_chars_per_s" in metrics for arm in ("expanded", "base-vocab"))
    assert ("chars_per_s_ratio/qaa" in metrics) is both_replied
    # and both wrote the smoke set's reference replies: the expanded spelling takes fewer steps for the same text
    assert (
        metrics["speed/expanded/qaa/same_text_chars_per_token"]
        > metrics["speed/base-vocab/qaa/same_text_chars_per_token"]
    )
    assert metrics["same_text_chars_per_s_ratio/qaa"] > 0
    assert (run / "evaluate" / "ab.png").is_file()
    report = (run / "report.md").read_text()
    assert "base-vocab" in report
    # a ratio sentence when both arms replied in the language, else how often each did
    assert ("characters per second of the base-vocabulary model" in report) is both_replied
    assert ("no speed ratio" in report) is not both_replied
    assert "Testish, the same text: writing the suites' reference replies" in report
    # the same command in one process finds everything finished, the inner arm included
    again = _xlang(*extend, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "running" not in again.stdout, again.stdout + again.stderr
