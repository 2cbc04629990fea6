"""Streamed corpora: local shards through `datasets`, packed and mixed, resumed from a saved position.

The shards are written here from the cached Debian corpora (real Korean and English text), repeated in
shuffled groupings until they reach the size under test; the tokenizer is the real SmolLM2 one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xlang.errors import XlangError

SEQ_LEN = 256
MIX = {"ko": 0.5, "en": 0.5}

# One size's measurement, in a fresh interpreter so that its peak RSS is its own.
_CHILD = r"""
import hashlib, json, resource, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
began = time.perf_counter()
from transformers import AutoTokenizer
from xlang.data.shards import stream_shards
from xlang.train.data import PackedStream, StreamingDocs

tokenizer = AutoTokenizer.from_pretrained(args["tokenizer"])

def build():
    sources = {
        code: StreamingDocs(code, stream_shards(folder), tokenizer, seed=0, buffer_size=args["buffer"])
        for code, folder in args["folders"].items()
    }
    return PackedStream(sources, args["mix"], args["seq_len"], micro_batch=1, grad_accum=1)

resume_at, total = args["resume_at"], args["blocks"]
tokens = {}
tail = hashlib.sha256()
position = None
for index, block in zip(range(total), build().blocks(0)):
    for name, count in block.tokens_by_source.items():
        tokens[name] = tokens.get(name, 0) + count
    if index + 1 == resume_at:
        position = json.loads(json.dumps(block.position))
    elif index + 1 > resume_at:
        tail.update(block.input_ids.tobytes() + block.labels.tobytes())
streamed = time.perf_counter() - began
resumed = build()
resumed.restore(resume_at, position)
again = hashlib.sha256()
for _, block in zip(range(total - resume_at), resumed.blocks(resume_at)):
    again.update(block.input_ids.tobytes() + block.labels.tobytes())
def peak_rss() -> int:
    # VmHWM is this program's own high-water mark; ru_maxrss would also count the parent's memory before
    # exec (Linux keeps it across exec), which in a long test session is gigabytes
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({
    "peak_rss": peak_rss(),
    "tokens": tokens,
    "tail": tail.hexdigest(),
    "resumed_tail": again.hexdigest(),
    "position": position,
    "stream_s": streamed,
    "resume_s": time.perf_counter() - began - streamed,
}))
"""


@pytest.fixture(scope="module")
def paragraphs(test_cache_dir: Path) -> dict[str, list[str]]:
    """The cached training splits of the Korean and English Debian corpora."""
    from xlang import plugins
    from xlang.resolve import Resolver
    from xlang.settings import load_settings

    resolver = Resolver(load_settings(cache_dir=test_cache_dir), plugins.make_plugin_manager())
    return {code: list(resolver.dataset(resolver.language(code), "train")["text"]) for code in MIX}


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def write_shards(folder: Path, paragraphs: list[str], target_bytes: int, shard_bytes: int, seed: int) -> int:
    """Parquet shards of documents made of 8 real paragraphs, regrouped in a new shuffled order on every
    repetition (so no two repetitions share documents), uncompressed so that file size is text size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = shard = size = 0
    pending: list[str] = []
    while written < target_bytes:
        order = rng.permutation(len(paragraphs))
        for first in range(0, len(order) - 7, 8):
            document = "\n".join(paragraphs[i] for i in order[first : first + 8])
            pending.append(document)
            size += len(document.encode())
            if size >= shard_bytes or written + size >= target_bytes:
                table = pa.table({"text": pending, "id": np.arange(len(pending)) + shard * 10**6})
                pq.write_table(table, folder / f"part-{shard:05d}.parquet", compression="none", use_dictionary=False)
                written, shard, size, pending = written + size, shard + 1, 0, []
                if written >= target_bytes:
                    break
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


def digest(blocks: list[Any]) -> list[str]:
    return [hashlib.sha256(b.input_ids.tobytes() + b.labels.tobytes()).hexdigest() for b in blocks]


def test_resumed_stream_matches_uninterrupted_one(
    paragraphs: dict[str, list[str]], tokenizer: Any, tmp_path: Path
) -> None:
    """From any block's saved position, a fresh stream yields exactly the blocks that followed it: across
    shard and shuffle-window boundaries, mid-document, and after the streamed corpus starts a new pass."""
    from xlang.data.shards import stream_shards
    from xlang.train.data import LocalDocs, PackedStream, StreamingDocs, tokenize_documents

    write_shards(tmp_path / "ko", paragraphs["ko"][:1200], 24_000, 6_000, seed=1)
    english = tokenize_documents(tokenizer, paragraphs["en"][:400])

    def build() -> PackedStream:
        sources = {
            "ko": StreamingDocs("ko", stream_shards(tmp_path / "ko"), tokenizer, seed=3, buffer_size=7),
            "en": LocalDocs("en", english, seed=3),
        }
        return PackedStream(sources, MIX, 64, micro_batch=1, grad_accum=1)

    blocks = list(zip(range(900), build().blocks(0), strict=False))
    blocks = [b for _, b in blocks]
    positions = [b.position for b in blocks]
    assert all(p is not None for p in positions)
    assert max(p["mix"]["passes"]["ko"] for p in positions) >= 1, "the streamed corpus should wrap within the test"
    windows = {p["mix"]["cursors"]["ko"].get("window") for p in positions if p["mix"]["cursors"]["ko"]}
    assert len(windows) >= 5
    cut = [i for i, p in enumerate(positions) if p["skip"] > 0]
    assert cut, "some block should end mid-document"
    checked = sorted({1, 37, cut[0], cut[len(cut) // 2], 600, 868})
    for index in checked:
        resumed = build()
        resumed.restore(index + 1, json.loads(json.dumps(positions[index])))
        following = [b for _, b in zip(range(30), resumed.blocks(index + 1), strict=False)]
        assert digest(following) == digest(blocks[index + 1 : index + 31]), f"resume after block {index}"


def test_stream_without_state_dict_falls_back_to_replay(tokenizer: Any, paragraphs: dict[str, list[str]]) -> None:
    """A dataset that cannot report a position (a plain iterable) still resumes, by replaying."""
    from xlang.train.data import PackedStream, StreamingDocs

    class Rows:
        def __iter__(self):  # type: ignore[no-untyped-def]
            return ({"text": t} for t in paragraphs["en"][:300])

    def build() -> PackedStream:
        source = StreamingDocs("en", Rows(), tokenizer, seed=0, buffer_size=50)
        return PackedStream({"en": source}, {"en": 1.0}, 64, micro_batch=1, grad_accum=1)

    blocks = [b for _, b in zip(range(120), build().blocks(0), strict=False)]
    assert all(b.position is None for b in blocks)
    assert digest(list(zip(*zip(range(20), build().blocks(100), strict=False), strict=False))[1]) == digest(
        blocks[100:120]
    )


def test_checkpoint_stores_the_stream_position_and_resume_uses_it(
    paragraphs: dict[str, list[str]], tokenizer: Any, tmp_path: Path
) -> None:
    """The engine writes the stream position into each checkpoint and hands it back on resume: the
    resumed run trains on the same micro-batches as the uninterrupted one."""
    import shutil

    import torch

    from xlang.data.shards import stream_shards
    from xlang.train.config import TrainLoopConfig
    from xlang.train.data import PackedStream, StreamingDocs
    from xlang.train.engine import list_checkpoints, run_training

    for code in MIX:
        write_shards(tmp_path / "shards" / code, paragraphs[code][:800], 40_000, 15_000, seed=2)

    def build() -> PackedStream:
        sources = {
            code: StreamingDocs(code, stream_shards(tmp_path / "shards" / code), tokenizer, seed=0, buffer_size=30)
            for code in MIX
        }
        return PackedStream(sources, MIX, 128, micro_batch=2, grad_accum=2)

    seen: list[list[str]] = []

    def loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
        seen[-1].append(hashlib.sha256(batch["input_ids"].numpy().tobytes()).hexdigest())
        return model(batch["input_ids"].float()).pow(2).sum(), int(batch["input_ids"].numel())

    def train(out: Path, stream: PackedStream) -> None:
        seen.append([])
        torch.manual_seed(0)
        model = torch.nn.Linear(128, 1)
        config = TrainLoopConfig(steps=6, save_every=3, micro_batch=2, grad_accum=2, progress=False, tensorboard=False)
        run_training(model, stream.make_batches(), config, out, loss_fn=loss, count_tokens=lambda b: 256)

    train(tmp_path / "whole", build())
    train(tmp_path / "cut", build())
    checkpoints = list_checkpoints(tmp_path / "cut")
    meta = json.loads((checkpoints[0] / "meta.json").read_text())
    saved = meta["data_position"]["stream"]
    assert meta["step"] == 3 and all("window" in saved["mix"]["cursors"][code] for code in MIX)
    shutil.rmtree(checkpoints[-1])
    for name in ("done.json", "result.json"):
        (tmp_path / "cut" / name).unlink(missing_ok=True)
    resumed = build()
    train(tmp_path / "cut", resumed)
    assert resumed.position(3 * 4) == saved, "the resumed stream should start from the saved position"
    assert seen[2] == seen[0][3 * 2 :], "the resumed steps must see the uninterrupted run's micro-batches"
    assert saved["mix"]["cursors"]["ko"]["corpus"] == build().sources["ko"].corpus_digest

    # a shard added between the kill and the resume: the saved position now points at other text, so stop
    shutil.rmtree(list_checkpoints(tmp_path / "cut")[-1])
    for name in ("done.json", "result.json"):
        (tmp_path / "cut" / name).unlink(missing_ok=True)
    extra = tmp_path / "extra"
    write_shards(extra, paragraphs["ko"][:80], 4_000, 4_000, seed=3)
    shutil.copy(next(extra.glob("*.parquet")), tmp_path / "shards" / "ko" / "part-99999.parquet")
    with pytest.raises(XlangError, match="corpus 'ko' is not the one the checkpoint was written on"):
        train(tmp_path / "cut", build())


def test_stream_shards_errors_name_the_input(tmp_path: Path) -> None:
    from xlang.data.shards import stream_shards

    with pytest.raises(XlangError, match="neither a folder"):
        stream_shards(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(XlangError, match="no .parquet"):
        stream_shards(tmp_path / "empty")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(XlangError, match="no column 'text'"):
        stream_shards(tmp_path / "x.parquet")
    assert [row["body"] for row in stream_shards(tmp_path / "*.parquet", field="body")] == ["a"]
    (tmp_path / "y.jsonl").write_text('{"text": "b"}\n')
    with pytest.raises(XlangError, match="mixes parquet and JSONL"):
        stream_shards(tmp_path)


@pytest.mark.slow
def test_peak_memory_stays_flat_at_ten_times_the_corpus(
    paragraphs: dict[str, list[str]], smollm2_dir: Path, tmp_path: Path
) -> None:
    """Stream-pack the same number of blocks from ~30 MB and ~300 MB of shards: the peak RSS of the
    process does not grow with the corpus, stays under 2 GB, and a resume mid-stream is exact."""
    measured = {}
    for label, total in (("1x", 30_000_000), ("10x", 300_000_000)):
        folders = {}
        size = 0
        for seed, code in enumerate(MIX):
            folders[code] = str(tmp_path / label / code)
            size += write_shards(Path(folders[code]), paragraphs[code], total // 2, 1_000_000, seed=seed)
        args = {
            "tokenizer": str(smollm2_dir),
            "folders": folders,
            "mix": MIX,
            "seq_len": SEQ_LEN,
            "buffer": 200,
            "blocks": 3000,
            "resume_at": 1800,
        }
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["shard_bytes"] = size
        measured[label] = result
        shutil_rmtree(tmp_path / label)
        print(
            f"streaming {label}: {size / 1e6:.0f} MB of parquet shards, {args['blocks']} blocks of {SEQ_LEN} tokens, "
            f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB, stream {result['stream_s']:.1f} s, "
            f"resume {result['resume_s']:.1f} s"
        )
        assert result["resumed_tail"] == result["tail"], f"{label}: the resumed stream differs"
        cursor = result["position"]["mix"]["cursors"]["ko"]
        assert cursor["window"] > 0 and cursor["rows"] is not None, cursor
        shares = {k: v / sum(result["tokens"].values()) for k, v in result["tokens"].items()}
        assert all(abs(shares[k] - MIX[k]) < 0.02 for k in MIX), shares
    assert measured["10x"]["shard_bytes"] > 9 * measured["1x"]["shard_bytes"]
    assert measured["10x"]["peak_rss"] < measured["1x"]["peak_rss"] + 64 * 2**20
    assert measured["10x"]["peak_rss"] < 2 * 2**30


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_a_file_uri_of_a_folder_or_glob_streams_its_shards_with_a_validation_head(tmp_path: Path) -> None:
    """`file://DIR` and `file://DIR/*.jsonl` are shards streamed through the corpus loader: the first
    `validation_records` records are validation, the rest train, never both; an unknown option is refused."""
    import json

    from xlang.data.sources import load_source
    from xlang.errors import XlangError

    for shard in range(3):
        rows = "".join(json.dumps({"body": f"document {shard}-{row}"}) + "\n" for row in range(5))
        (tmp_path / f"part-{shard}.jsonl").write_text(rows)
    train = [
        row["text"] for row in load_source(f"file://{tmp_path}?field=body&validation_records=4", "train", tmp_path)
    ]
    held = load_source(f"file://{tmp_path}/*.jsonl?field=body&validation_records=4", "validation", tmp_path)
    validation = [row["text"] for row in held]
    assert validation == [f"document 0-{row}" for row in range(4)]
    assert len(train) == 11 and not set(train) & set(validation)
    with pytest.raises(XlangError, match="colour"):
        load_source(f"file://{tmp_path}?colour=1", "train", tmp_path)
