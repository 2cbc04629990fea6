"""Continued bilingual pretraining and the shared training engine, on tiny random models (CPU).

The tiny assets are real components at toy size: a byte-level BPE tokenizer trained here, grown by a
few Korean tokens, and a random Llama whose vocabulary matches. Multi-process and kill -9 tests run
real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from launching import python_command
from tiny_models import tiny_llama

from xlang.errors import XlangError
from xlang.train.config import PretrainConfig, StageConfig, TrainLoopConfig, parse_mix

REPO = Path(__file__).resolve().parent.parent

EN_WORDS = "the cat sat on a mat and looked at the small red house near the river while people walked by".split()
KO_WORDS = "고양이 는 작은 빨간 집 근처 강 에서 사람들 이 걸어가는 동안 매트 위에 앉아 있었다".split()
NEW_TOKENS = ["고양이", "빨간", "사람들", "근처", "작은"]


def make_texts(language: str, count: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"{language}/{seed}")
    words = EN_WORDS if language == "en" else KO_WORDS
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) + "." for _ in range(count)]


def build_tiny(root: Path, *, tied: bool = True, hidden: int = 32, layers: int = 2) -> tuple[Path, Path, list[int]]:
    """(model_dir, tokenizer_dir, new_token_ids): a 300-token BPE + 5 Korean tokens, a random Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(make_texts("en", 200), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    base_size = len(tokenizer)
    tokenizer.add_tokens(NEW_TOKENS)
    new_ids = list(range(base_size, len(tokenizer)))
    tokenizer.save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=512,
    )
    LlamaForCausalLM(config).save_pretrained(root / "model")
    return root / "model", root / "tokenizer", new_ids


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    return build_tiny(tmp_path_factory.mktemp("tiny-tied"))


@pytest.fixture(scope="module")
def tiny_untied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    return build_tiny(tmp_path_factory.mktemp("tiny-untied"), tied=False)


def corpora() -> dict[str, list[str]]:
    return {"ko": make_texts("ko", 120), "en": make_texts("en", 120)}


def quick_config(**overrides: object) -> PretrainConfig:
    values: dict[str, object] = dict(
        steps=6,
        seq_len=64,
        micro_batch=2,
        save_every=3,
        eval_every=3,
        log_every=1,
        mix={"ko": 0.5, "en": 0.5},
        progress=False,
        tensorboard=False,
        warmup_steps=1,
        lr=5e-3,
    )
    values.update(overrides)
    return PretrainConfig(**values)  # type: ignore[arg-type]


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------- config


def test_parse_mix_and_errors() -> None:
    assert parse_mix("ko=0.5, en=0.5") == {"ko": 0.5, "en": 0.5}
    for bad in ("ko", "ko=0", "ko=x", "", "ko=1,ko=2"):
        with pytest.raises(XlangError):
            parse_mix(bad)


def test_config_rejects_all_plus_lora_and_unknown_parts() -> None:
    with pytest.raises(ValueError, match="both 'all'"):
        PretrainConfig(
            stages=(
                StageConfig(name="a", train=("all",), steps=1, lr=1e-3),
                StageConfig(name="b", train=("lora",), steps=1, lr=1e-3),
            )
        )
    with pytest.raises(ValueError, match="unknown part"):
        StageConfig(name="a", train=("everything",), steps=1, lr=1e-3)


def test_config_hash_ignores_logging_knobs() -> None:
    a = TrainLoopConfig(steps=10, save_every=5, log_every=1)
    b = TrainLoopConfig(steps=10, save_every=2, log_every=7, progress=False)
    c = TrainLoopConfig(steps=10, lr=1e-3)
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_import_stays_light() -> None:
    code = "import sys, xlang.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------- data


def _stream(tokenizer_dir: Path, weights: dict[str, float], **kwargs: object):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from xlang.train.data import LocalDocs, PackedStream, tokenize_documents

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sources = {name: LocalDocs(name, tokenize_documents(tokenizer, texts), seed=0) for name, texts in corpora().items()}
    options = {"micro_batch": 2, "grad_accum": 2, **kwargs}
    return tokenizer, PackedStream(sources, weights, 64, **options)  # type: ignore[arg-type]


def test_packing_fills_blocks_and_respects_documents(tiny: tuple[Path, Path, list[int]]) -> None:
    tokenizer, stream = _stream(tiny[1], {"ko": 0.5, "en": 0.5})
    eos = tokenizer.eos_token_id
    for block in list(zip(range(20), stream.blocks(0), strict=False)):
        block = block[1]
        assert block.input_ids.shape == block.labels.shape == block.position_ids.shape == (64,)
        starts = [i for i in range(64) if block.position_ids[i] == 0]
        for i in starts[1:]:
            assert block.input_ids[i - 1] == eos  # a document starts right after the previous one's EOS
            assert block.labels[i] == -100  # ...and its first token is never a target
        assert all(block.position_ids[i] == block.position_ids[i - 1] + 1 for i in range(1, 64) if i not in starts)
    first = [b.input_ids.tolist() for _, b in zip(range(10), stream.blocks(0), strict=False)]
    again = [b.input_ids.tolist() for _, b in zip(range(10), stream.blocks(0), strict=False)]
    assert first == again
    skipped = [b.input_ids.tolist() for _, b in zip(range(5), stream.blocks(5), strict=False)]
    assert skipped == first[5:]


def test_mix_weights_set_token_shares(tiny: tuple[Path, Path, list[int]]) -> None:
    _, stream = _stream(tiny[1], {"ko": 0.8, "en": 0.2})
    shares = stream.token_shares(100)
    assert shares["ko"] == pytest.approx(0.8, abs=0.02)
    assert shares["en"] == pytest.approx(0.2, abs=0.02)


def test_ranks_get_disjoint_blocks_and_resume_matches(tiny: tuple[Path, Path, list[int]]) -> None:
    _, stream = _stream(tiny[1], {"ko": 0.5, "en": 0.5})
    import torch

    def rows(step: int, rank: int, world: int, count: int) -> list[tuple[int, ...]]:
        it = stream.batches(step, rank, world)
        return [tuple(r.tolist()) for _ in range(count) for r in next(it)["input_ids"]]

    single = rows(0, 0, 1, 8)  # 4 steps x 2 micro-batches x 2 blocks
    rank0, rank1 = rows(0, 0, 2, 4), rows(0, 1, 2, 4)
    assert not set(rank0) & set(rank1)
    assert set(rank0) | set(rank1) == set(single)
    assert rows(2, 0, 1, 4) == single[8:]  # starting at step 2 = the blocks a full run reads from step 2
    assert isinstance(next(stream.batches(0, 0, 1))["position_ids"], torch.Tensor)


# ----------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("head", ["lora-tokens", "tokens-only", "modules-to-save", "plain"])
def test_fused_loss_matches_transformers(tied: bool, head: str) -> None:
    import torch
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model

    from xlang.train.loss import CausalLMWithFusedLoss

    model = tiny_llama(100, tied=tied)
    new = list(range(90, 100))
    if head == "lora-tokens":
        model = get_peft_model(
            model,
            LoraConfig(
                r=4,
                target_modules="all-linear",
                trainable_token_indices=(new if tied else {"embed_tokens": new, "lm_head": new}),
            ),
        )
    elif head == "tokens-only":
        model = get_peft_model(
            model,
            TrainableTokensConfig(
                target_modules=["embed_tokens"] if tied else ["embed_tokens", "lm_head"], token_indices=new
            ),
        )
    elif head == "modules-to-save":
        model = get_peft_model(
            model,
            LoraConfig(
                r=4,
                target_modules="all-linear",
                modules_to_save=["embed_tokens"] if tied else ["lm_head"],
                trainable_token_indices=None if tied else {"embed_tokens": new},
                ensure_weight_tying=tied,
            ),
        )
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    ids = torch.randint(0, 100, (2, 12))
    ids[:, 4] = 95  # a new token in the input
    labels = ids.clone()
    labels[0, 3] = -100
    positions = torch.cat([torch.arange(5), torch.arange(7)])[None].expand(2, -1)
    reference = model(input_ids=ids, labels=labels, position_ids=positions, use_cache=False)
    n_tokens = int((labels[:, 1:] != -100).sum())
    (reference.loss * n_tokens).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    loss, count = CausalLMWithFusedLoss(model, chunk_tokens=5)(input_ids=ids, labels=labels, position_ids=positions)
    loss.backward()
    assert int(count) == n_tokens
    assert float(loss.detach()) == pytest.approx(float(reference.loss.detach()) * n_tokens, rel=1e-5)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


# ----------------------------------------------------------------------------------------- the stage


def _logits(model, ids):  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.slow
def test_default_pretrain_writes_loadable_adapter_and_merged_model(
    tiny: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from xlang.train import pretrain

    model_dir, tokenizer_dir, new_ids = tiny
    parallel = [{"en": a, "ko": b} for a, b in zip(make_texts("en", 30, 1), make_texts("ko", 30, 1), strict=True)]
    config = quick_config(mix={"ko": 0.45, "en": 0.45, "parallel": 0.1}, tensorboard=True)
    result = pretrain(model_dir, tokenizer_dir, corpora(), parallel, config, tmp_path / "out", new_token_ids=new_ids)

    assert result.adapter_dir is not None and (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.model_dir / "model.safetensors").is_file() and (result.model_dir / "tokenizer.json").is_file()
    assert result.curve_png is not None and result.curve_png.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert set(summary["bpc_before"]) == set(summary["bpc_after"]) == {"ko", "en"}
    assert summary["mix_measured"]["parallel"] == pytest.approx(0.1, abs=0.03)
    assert list((tmp_path / "out" / "stages" / "lora" / "tensorboard").iterdir())
    records = [json.loads(line) for line in (tmp_path / "out" / "stages" / "lora" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 7))
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 3, 6]

    # plain peft on the expanded base, no resizing, gives the merged model's logits
    ids = torch.tensor([[new_ids[0], 5, new_ids[2], 17, 40]])
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    before = _logits(base, ids)
    with_adapter = PeftModel.from_pretrained(base, str(result.adapter_dir))
    merged = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
    torch.testing.assert_close(_logits(with_adapter, ids), _logits(merged, ids), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, _logits(merged, ids))

    # a second call finds the finished stage and returns it without training
    again = pretrain(model_dir, tokenizer_dir, corpora(), parallel, config, tmp_path / "out", new_token_ids=new_ids)
    assert again.model_dir == result.model_dir and again.summary == summary


@pytest.mark.slow
@pytest.mark.parametrize("tied", [True, False])
def test_staged_schedule_unfreezes_in_order(
    tied: bool, tiny: tuple[Path, Path, list[int]], tiny_untied: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from xlang.train import pretrain

    model_dir, tokenizer_dir, new_ids = tiny if tied else tiny_untied
    stages = (
        StageConfig(name="rows", train=("new-rows",), steps=3, lr=1e-2),
        StageConfig(name="output", train=("new-rows", "output"), steps=3, lr=1e-2),
        StageConfig(name="lora", train=("new-rows", "output", "lora"), steps=3, lr=1e-2),
    )
    out = tmp_path / "out"
    result = pretrain(
        model_dir, tokenizer_dir, corpora(), None, quick_config(stages=stages, eval_every=0), out, new_token_ids=new_ids
    )
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    head = base.get_output_embeddings().weight.detach()
    old = [i for i in range(head.shape[0]) if i not in new_ids]

    def saved(stage: str) -> dict[str, torch.Tensor]:
        return load_file(str(out / "stages" / stage / "checkpoints" / "step-000003" / "trainable.safetensors"))

    rows_stage = saved("rows")
    full = [t for name, t in rows_stage.items() if "modules_to_save" in name]
    assert full, "the output layer is a modules-to-save copy when a later stage trains it whole"
    torch.testing.assert_close(full[0][old], head[old])  # stage 1: only the new rows moved
    assert not torch.allclose(full[0][new_ids], head[new_ids])
    assert not any("lora" in name for name in rows_stage)
    output_full = [t for name, t in saved("output").items() if "modules_to_save" in name][0]
    assert not torch.allclose(output_full[old], head[old])  # stage 2: the whole output layer
    assert any("lora_B" in name for name in saved("lora"))
    if not tied:  # the input embedding's old rows never train
        merged = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
        torch.testing.assert_close(merged.get_input_embeddings().weight[old], base.get_input_embeddings().weight[old])

    ids = torch.tensor([[new_ids[1], 3, 9, new_ids[4]]])
    merged = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(result.adapter_dir))
    torch.testing.assert_close(_logits(reloaded, ids), _logits(merged, ids), atol=1e-5, rtol=1e-5)


def test_full_finetune_writes_model_without_adapter(tiny: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    from xlang.train import pretrain

    model_dir, tokenizer_dir, new_ids = tiny
    result = pretrain(
        model_dir,
        tokenizer_dir,
        corpora(),
        None,
        quick_config(trainable="all", steps=2, eval_every=0),
        tmp_path / "out",
        new_token_ids=new_ids,
    )
    assert result.adapter_dir is None and not (tmp_path / "out" / "adapter").exists()
    assert (result.model_dir / "model.safetensors").is_file()


@pytest.mark.slow
def test_bad_inputs_exit_2_and_touch_nothing(tiny: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    from xlang.train import pretrain

    model_dir, tokenizer_dir, new_ids = tiny
    with pytest.raises(XlangError, match="'xx'.*ko, en") as unknown:
        pretrain(
            model_dir,
            tokenizer_dir,
            corpora(),
            None,
            quick_config(mix={"ko": 0.5, "xx": 0.5}),
            tmp_path / "a",
            new_token_ids=new_ids,
        )
    assert unknown.value.exit_code == 2 and not (tmp_path / "a").exists()
    with pytest.raises(XlangError, match="fewer than one block"):
        pretrain(
            model_dir,
            tokenizer_dir,
            {"ko": ["고양이."], "en": make_texts("en", 50)},
            None,
            quick_config(),
            tmp_path / "b",
            new_token_ids=new_ids,
        )
    assert not (tmp_path / "b").exists()

    out = tmp_path / "c"
    pretrain(
        model_dir,
        tokenizer_dir,
        corpora(),
        None,
        quick_config(steps=4, save_every=2, eval_every=0),
        out,
        new_token_ids=new_ids,
    )
    before = tree_digest(out)
    with pytest.raises(XlangError, match="another configuration") as other:
        pretrain(
            model_dir,
            tokenizer_dir,
            corpora(),
            None,
            quick_config(steps=4, save_every=2, eval_every=0, lr=1e-4),
            out,
            new_token_ids=new_ids,
        )
    assert other.value.exit_code == 2
    assert tree_digest(out) == before


def test_a_model_without_the_new_rows_is_refused_and_the_corrected_run_uses_the_same_folder(
    tiny: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    """A model folder from before the embedding stage (fewer rows than the tokenizer): one line, no folder. The
    refused run must not leave a record of its configuration, or the corrected run (another model folder)
    would be refused as "another configuration" in the same output folder."""
    from transformers import AutoModelForCausalLM

    from xlang.train import pretrain

    model_dir, tokenizer_dir, new_ids = tiny
    short = AutoModelForCausalLM.from_pretrained(model_dir)
    short.resize_token_embeddings(min(new_ids))
    short.save_pretrained(tmp_path / "short")
    out = tmp_path / "run"
    with pytest.raises(
        XlangError, match=r"embedding rows; pretrain needs the model the embedding stage wrote"
    ) as refused:
        pretrain(tmp_path / "short", tokenizer_dir, corpora(), None, quick_config(), out, new_token_ids=new_ids)
    assert refused.value.exit_code == 2 and not out.exists()
    config = quick_config(steps=2, save_every=2, eval_every=0)
    result = pretrain(model_dir, tokenizer_dir, corpora(), None, config, out, new_token_ids=new_ids)
    assert result.model_dir.is_dir()


def test_engine_refuses_a_folder_of_another_config(tmp_path: Path) -> None:
    import torch

    from xlang.train.engine import run_training

    model = torch.nn.Linear(4, 1)

    def batches(step: int, rank: int, world: int):  # type: ignore[no-untyped-def]
        generator = torch.Generator().manual_seed(step)
        while True:
            yield {"x": torch.randn(8, 4, generator=generator)}

    def loss(m, batch):  # type: ignore[no-untyped-def]
        return m(batch["x"]).pow(2).sum(), 8

    count = lambda batch: 8  # noqa: E731
    first = run_training(
        model,
        batches,
        TrainLoopConfig(steps=3, save_every=1, progress=False),
        tmp_path,
        loss_fn=loss,
        count_tokens=count,
    )
    assert first.steps == 3 and len(first.history) == 3
    digest = tree_digest(tmp_path)
    with pytest.raises(XlangError, match="another configuration"):
        run_training(
            model,
            batches,
            TrainLoopConfig(steps=5, save_every=1, progress=False),
            tmp_path,
            loss_fn=loss,
            count_tokens=count,
        )
    assert tree_digest(tmp_path) == digest
    again = run_training(
        model,
        batches,
        TrainLoopConfig(steps=3, save_every=2, progress=False),
        tmp_path,
        loss_fn=loss,
        count_tokens=count,
    )
    assert again.already_done


# ----------------------------------------------------------------------------------------- processes

RUN_SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from xlang.train import PretrainConfig, pretrain
spec = json.loads(open(sys.argv[1]).read())
pretrain(spec["model"], spec["tokenizer"], spec["texts"], None, PretrainConfig(**spec["config"]), spec["out"],
         new_token_ids=spec["new_ids"])
"""


def _spec(tmp_path: Path, tiny: tuple[Path, Path, list[int]], out: Path, **config: object) -> Path:
    model_dir, tokenizer_dir, new_ids = tiny
    spec = {
        "model": str(model_dir),
        "tokenizer": str(tokenizer_dir),
        "texts": corpora(),
        "new_ids": new_ids,
        "out": str(out),
        "config": quick_config(**config).model_dump(mode="json"),
    }
    path = tmp_path / f"{out.name}.json"
    path.write_text(json.dumps(spec))
    (tmp_path / "run.py").write_text(RUN_SCRIPT)
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}


def _train_losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "stages" / "lora" / "metrics.jsonl").open()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def _kill_9_when(spec: Path, ready: Callable[[], bool], what: str) -> None:
    """Start the run of `spec` and SIGKILL it as soon as `ready()` holds (polling the files it writes)."""
    process = subprocess.Popen(
        [sys.executable, str(spec.parent / "run.py"), str(spec)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} appeared"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_9_then_restart_continues_the_same_curve(tiny: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    settings = dict(steps=40, save_every=4, eval_every=0, keep_checkpoints=3)
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(_spec(tmp_path, tiny, reference, **settings))],
        check=True,
        env=_env(),
        capture_output=True,
    )

    killed = tmp_path / "killed"
    spec = _spec(tmp_path, tiny, killed, **settings)
    checkpoints = killed / "stages" / "lora" / "checkpoints"
    # meta.json is written last: the first checkpoint is complete
    _kill_9_when(spec, lambda: any(checkpoints.glob("step-*/meta.json")), "first checkpoint")
    assert not (killed / "pretrain.json").exists(), "the run finished before the kill"
    resumed_from = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*") if (p / "meta.json").is_file())
    assert resumed_from < 40

    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(spec)], check=True, env=_env(), capture_output=True)
    expected, got = _train_losses(reference), _train_losses(killed)
    assert sorted(got) == list(range(1, 41))
    after = [step for step in expected if step > resumed_from]
    assert [got[s] for s in after] == pytest.approx([expected[s] for s in after], rel=1e-6, abs=1e-7)
    assert (killed / "pretrain.json").is_file()


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(
    tiny: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    """The restart begins at step 0 again, its evaluation included: the killed attempt's lines must go."""
    out = tmp_path / "killed"
    spec = _spec(tmp_path, tiny, out, steps=6, save_every=100, eval_every=3, tensorboard=True)
    metrics = out / "stages" / "lora" / "metrics.jsonl"
    # the kill lands after the run's step-0 evaluation and first step
    _kill_9_when(spec, lambda: metrics.is_file() and '"kind": "train"' in metrics.read_text(), "logged step")
    assert not (out / "pretrain.json").exists(), "the run finished before the kill"
    assert not list((out / "stages" / "lora").glob("checkpoints/step-*/meta.json"))

    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(spec)], check=True, env=_env(), capture_output=True)
    records = [json.loads(line) for line in metrics.open()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 3, 6]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 7))
    # TensorBoard reads both attempts' event files; the restart's purge drops the killed attempt's points
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "stages" / "lora" / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("pretrain:lora/eval/bpc/ko")] == [0, 3, 6]
    assert [event.step for event in events.Scalars("pretrain:lora/train/loss")] == list(range(1, 7))


DDP_SCRIPT = """
import hashlib, json, sys
import torch
torch.set_num_threads(1)
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer
from safetensors.torch import save_file
from xlang.train.config import TrainLoopConfig
from xlang.train.data import LocalDocs, PackedStream, tokenize_documents
from xlang.train.engine import run_training
from xlang.train.loss import CausalLMWithFusedLoss, fused_loss
from xlang.train.trainable import build_trainable, stage_selection

spec = json.loads(open(sys.argv[1]).read())
accelerator = Accelerator(cpu=True)
assert accelerator.num_processes == 2, accelerator.state
rank = accelerator.process_index
tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
sources = {k: LocalDocs(k, tokenize_documents(tokenizer, v), 0) for k, v in spec["texts"].items()}
stream = PackedStream(sources, {"ko": 0.5, "en": 0.5}, 64, micro_batch=2, grad_accum=2)
torch.manual_seed(1000 + rank)  # different initial LoRA per rank: DDP must broadcast rank 0's
trainable = build_trainable(AutoModelForCausalLM.from_pretrained(spec["model"]), spec["new_ids"], {"new-rows", "lora"})
predicate, _ = stage_selection(trainable, ["new-rows", "lora"])
seen = []

def batches(step_offset, r, world):
    for batch in stream.make_batches()(step_offset, r, world):
        seen.extend(hashlib.sha1(bytes(row.numpy())).hexdigest() for row in batch["input_ids"])
        yield batch

wrapper = CausalLMWithFusedLoss(trainable.model)
config = TrainLoopConfig(steps=4, lr=1e-2, micro_batch=2, grad_accum=2, save_every=2, progress=False,
                         tensorboard=False)
result = run_training(wrapper, batches, config, spec["out"], trainable=predicate, loss_fn=fused_loss,
                      accelerator=accelerator)
state = {n: p.detach().clone().contiguous() for n, p in wrapper.named_parameters() if p.requires_grad}
save_file(state, f"{spec['out']}/weights-rank{rank}.safetensors")
json.dump({"seen": seen, "losses": [r.loss for r in result.history]}, open(f"{spec['out']}/seen-rank{rank}.json", "w"))
"""


@pytest.mark.slow
def test_two_process_gloo_run(tiny: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    model_dir, tokenizer_dir, new_ids = tiny
    out = tmp_path / "ddp"
    out.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "model": str(model_dir),
                "tokenizer": str(tokenizer_dir),
                "texts": corpora(),
                "new_ids": new_ids,
                "out": str(out),
            }
        )
    )
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    command = python_command([str(tmp_path / "ddp.py"), str(spec)], processes=2)
    env = {**_env(), "ACCELERATE_USE_CPU": "true", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    seen = [json.loads((out / f"seen-rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]["seen"]) == len(seen[1]["seen"]) == 4 * 2 * 2  # steps x accumulation x micro-batch
    assert not set(seen[0]["seen"]) & set(seen[1]["seen"]), "both ranks saw the same blocks"
    assert seen[0]["losses"] == seen[1]["losses"]  # the logged loss is the global one
    weights = [load_file(str(out / f"weights-rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys() and weights[0]
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], atol=0, rtol=0, msg=name)
    checkpoint = load_file(str(out / "checkpoints" / "step-000004" / "trainable.safetensors"))
    for name, tensor in checkpoint.items():
        torch.testing.assert_close(tensor, weights[0][name], atol=0, rtol=0)


class _Interrupted(Exception):
    pass


@pytest.mark.slow
def test_staged_run_interrupted_mid_stage_resumes_to_the_same_weights(
    tiny_untied: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from xlang.train import pretrain
    from xlang.train.pretraining import make_bpc_eval

    model_dir, tokenizer_dir, new_ids = tiny_untied
    stages = (
        StageConfig(name="rows", train=("new-rows",), steps=3, lr=1e-2),
        StageConfig(name="output", train=("new-rows", "output", "lora"), steps=6, lr=1e-2),
    )
    config = quick_config(stages=stages, save_every=2, eval_every=2)
    validation = {"ko": make_texts("ko", 4, 9), "en": make_texts("en", 4, 9)}
    full = pretrain(
        model_dir,
        tokenizer_dir,
        corpora(),
        None,
        config,
        tmp_path / "full",
        new_token_ids=new_ids,
        validation_by_language=validation,
    )

    from transformers import AutoTokenizer

    real_eval = make_bpc_eval(AutoTokenizer.from_pretrained(str(tokenizer_dir)), validation, window=64, stride=32)
    calls = []

    def interrupting(wrapper):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 5:  # rows@0, rows@2, rows@3, output@2, output@4: stop before saving step 4
            raise _Interrupted
        return real_eval(wrapper)

    out = tmp_path / "interrupted"
    with pytest.raises(_Interrupted):
        pretrain(
            model_dir,
            tokenizer_dir,
            corpora(),
            None,
            config,
            out,
            new_token_ids=new_ids,
            validation_by_language=validation,
            eval_fn=interrupting,
        )
    assert (out / "stages" / "rows" / "done.json").is_file()
    assert [p.name for p in (out / "stages" / "output" / "checkpoints").iterdir()] == ["step-000002"]
    resumed = pretrain(
        model_dir, tokenizer_dir, corpora(), None, config, out, new_token_ids=new_ids, validation_by_language=validation
    )
    expected = load_file(str(full.adapter_dir / "adapter_model.safetensors"))
    got = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), name
    steps = [
        r["step"] for r in map(json.loads, (out / "stages" / "output" / "metrics.jsonl").open()) if r["kind"] == "train"
    ]
    assert steps == list(range(1, 7))


@pytest.mark.slow
def test_compiled_layers_train_like_eager(tiny: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    from xlang.train import pretrain

    model_dir, tokenizer_dir, new_ids = tiny
    losses = {}
    for choice in ("no", "yes"):
        config = quick_config(steps=3, eval_every=0, compile=choice, mixed_precision="no")
        result = pretrain(model_dir, tokenizer_dir, corpora(), None, config, tmp_path / choice, new_token_ids=new_ids)
        assert result.summary["compiled_layers"] is (choice == "yes")
        losses[choice] = _train_losses(tmp_path / choice)
    assert list(losses["yes"].values()) == pytest.approx(list(losses["no"].values()), rel=1e-4)
