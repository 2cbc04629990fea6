"""Vision stage code: the languages' VIT data, assembly, assistant-only loss, resume, bad input, report.

Most tests use a tiny random LLaVA (2-layer Llama with SmolLM2's real tokenizer and template, 2-layer
DINOv2 at 56 px = 16 image tokens, loaded through the built-in `hf` tower); `tests/test_vlm_pipeline.py`
runs the real SmolLM2 + DINOv2, `tests/test_vision_*.py` the towers, the report's fonts and the stages.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from xlang.errors import XlangError

LANGS = ("en", "ko", "zh")
SYSTEM_PROMPTS = {"en": "Be helpful.", "ko": "친절하게 답하세요.", "zh": "请友好地回答。"}
TASKS = {"caption", "object-centric", "location-centric", "atmosphere-centric", "conversation"}


def spec(code: str) -> Any:
    from xlang import plugins

    return plugins.get_language(code, plugins.make_plugin_manager())


@functools.cache
def _language_records(code: str) -> tuple[dict[str, Any], ...]:
    """The records of a language plugin's `vit_data`, through the built-in loader."""
    from xlang.vlm.data import load_vit_uri

    return tuple(record for uri in spec(code).vit_data for record in load_vit_uri(uri))


def seed_records(split: str | None = None, langs: tuple[str, ...] = LANGS) -> list[dict[str, Any]]:
    """The seed records of the installed en, ko and zh plugins (copies), optionally of one split."""
    records = [dict(record) for code in langs for record in _language_records(code)]
    return records if split is None else [r for r in records if r.get("split") == split]


def hangul_share(text: str) -> float:
    visible = [c for c in text if not c.isspace()]
    return sum(0xAC00 <= ord(c) <= 0xD7A3 or 0x3130 <= ord(c) <= 0x318F for c in visible) / max(1, len(visible))


def han_share(text: str) -> float:
    visible = [c for c in text if not c.isspace()]
    return sum(0x4E00 <= ord(c) <= 0x9FFF for c in visible) / max(1, len(visible))


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> dict[str, Path]:
    """A tiny Llama with SmolLM2's tokenizer and a tiny DINOv2 tower at 56 px, as model folders."""
    from tiny_models import save_tiny_chat_lm, save_tiny_dinov2

    root = tmp_path_factory.mktemp("tiny-vlm")
    save_tiny_chat_lm(root / "lm", smollm2_dir)
    save_tiny_dinov2(root / "tower")
    return {"lm": root / "lm", "tower": root / "tower", "root": root}


@pytest.fixture(scope="session")
def tiny_llava(tiny_parts: dict[str, Path], test_cache_dir: Path) -> Path:
    from xlang import plugins
    from xlang.vlm.assemble import build_llava
    from xlang.vlm.config import AssembleConfig

    config = AssembleConfig(vision_tower="hf", vision_tower_options={"path": str(tiny_parts["tower"])})
    tower = plugins.get_strategy("vision_towers", config.vision_tower, plugins.make_plugin_manager())
    return build_llava(
        str(tiny_parts["lm"]),
        test_cache_dir,
        tiny_parts["root"] / "assembled",
        vision_tower=functools.partial(tower, options=tower.configure(config.vision_tower_options)),
        system_prompts=SYSTEM_PROMPTS,
        target_lang="ko",
        config=config,
    )


def _tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


# ----------------------------------------------------------------------------------------- tower


def test_tower_rules_stop_at_assembly(tiny_parts: dict[str, Path]) -> None:
    import transformers
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from xlang.vlm.assemble import assemble_llava, build_chat_template
    from xlang.vlm.towers import wrap_tower

    def language_model() -> tuple[Any, Any]:
        return LlamaForCausalLM.from_pretrained(tiny_parts["lm"]), AutoTokenizer.from_pretrained(tiny_parts["lm"])

    clip_processor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}
    )
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        )
    )
    with pytest.raises(XlangError, match="position table is fixed"):
        wrap_tower(clip, clip_processor, image_size=84, source="tiny-clip")
    # a CLIP tower works end to end: 16 patches, the class token dropped by the default strategy
    lm, tokenizer = language_model()
    template = build_chat_template(tokenizer.chat_template, SYSTEM_PROMPTS, "ko")
    llava, processor = assemble_llava(wrap_tower(clip, clip_processor), lm, tokenizer, chat_template=template)
    assert llava.config.image_seq_length == 16 and llava.config.vision_feature_select_strategy == "default"
    assert processor.num_additional_image_tokens == 1

    siglip_processor = getattr(transformers, "SiglipImageProcessorPil", transformers.SiglipImageProcessor)(
        size={"height": 56, "width": 56}
    )
    siglip = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        )
    )
    lm, tokenizer = language_model()
    with pytest.raises(XlangError, match="no class token"):
        assemble_llava(
            wrap_tower(siglip, siglip_processor),
            lm,
            tokenizer,
            chat_template=template,
            vision_feature_select_strategy="default",
        )
    lm, tokenizer = language_model()
    llava, _ = assemble_llava(wrap_tower(siglip, siglip_processor), lm, tokenizer, chat_template=template)
    assert llava.config.vision_feature_select_strategy == "full" and llava.config.image_seq_length == 16


# ----------------------------------------------------------------------------------------- data


def test_language_plugins_vit_data_covers_photos_languages_and_tasks() -> None:
    """Each language plugin ships its own records: the same photos and tasks, answers in its own script."""
    from xlang.vlm.data import check_record
    from xlang.vlm.images import load_image

    records = seed_records()
    images = sorted({r["image"] for r in records})
    assert len(images) >= 18
    assert {ref.split(":")[0] for ref in images} == {"skimage", "sklearn", "matplotlib"}
    assert len({r["id"] for r in records}) == len(records)
    for code in LANGS:
        assert {r["lang"] for r in _language_records(code)} == {code}  # a plugin's file holds its language only
        assert {r["split"] for r in _language_records(code)} == {"train", "heldout"}
    for ref in images:
        assert min(load_image(ref).size) >= 100
        for lang in LANGS:
            mine = [r for r in records if r["image"] == ref and r["lang"] == lang]
            assert {r["task"] for r in mine} == TASKS, (ref, lang)
            qa_turns = sum(len(r["conversations"]) // 2 for r in mine if r["task"] != "caption")
            assert qa_turns >= 4
            for record in mine:
                assert check_record(record) is None
                assert record["conversations"][0]["value"].startswith("<image>\n")
            # answers are in the record's language (the page photo quotes English text, hence per image)
            answers = " ".join(t["value"] for r in mine for t in r["conversations"] if t["from"] == "gpt")
            if lang == "ko":
                assert hangul_share(answers) > 0.5 and han_share(answers) == 0, (ref, lang)
            elif lang == "zh":
                assert han_share(answers) > 0.5 and hangul_share(answers) == 0, (ref, lang)
            else:
                assert hangul_share(answers) == han_share(answers) == 0, (ref, lang)
    heldout = {r["image"] for r in seed_records("heldout")}
    assert len(heldout) == 3 and not heldout & {r["image"] for r in seed_records("train")}


def test_load_vit_data_hook_serves_files(fresh_plugins: Any, tmp_path: Path, test_cache_dir: Path) -> None:
    from xlang import plugins
    from xlang.vlm.images import export_png, load_image

    heldout = seed_records("heldout", langs=("ko",))
    folder = tmp_path / "data"  # relative image paths resolve against the file's own folder
    rows = []
    for record in heldout:
        name = record["image"].split(":", 1)[1].rsplit(".", 1)[0] + ".png"
        export_png(record["image"], folder / "images" / name)
        rows.append({key: value for key, value in record.items() if key != "source"} | {"image": f"images/{name}"})
    path = folder / "vit.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    records = plugins.call_first("load_vit_data", uri=f"file://{path}", cache_dir=str(test_cache_dir))
    assert [r["id"] for r in records] == [r["id"] for r in heldout]
    assert Path(records[0]["image"]).is_absolute() and load_image(records[0]["image"]).size == (600, 400)
    assert records[0]["source"] == str(path)
    # the core has no data of its own any more: seed:// is nobody's scheme, like any unknown one
    for uri in ("seed://?split=heldout", "s3://bucket/x.jsonl", str(path)):
        assert plugins.call_first("load_vit_data", uri=uri, cache_dir=str(test_cache_dir)) is None, uri


def test_malformed_jsonl_row_names_file_and_line(tmp_path: Path) -> None:
    from xlang.vlm.data import read_vit_jsonl

    bad = tmp_path / "bad.jsonl"
    good = {"id": "a", "image": "x.png", "conversations": [{"from": "human", "value": "q"}]}
    bad.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(XlangError, match=r"bad\.jsonl:2 is not valid JSON"):
        read_vit_jsonl(bad)
    bad.write_text('{"id": "a"}\n')
    with pytest.raises(XlangError, match=r"bad\.jsonl:1 is not a LLaVA record"):
        read_vit_jsonl(bad)


# ----------------------------------------------------------------------------------------- template, labels


def test_chat_template_follows_language_chat_bits(tiny_llava: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_llava)
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "무엇이 보이나요?"}]}]
    korean = processor.apply_chat_template(turn, add_generation_prompt=True)
    assert korean == (
        f"<|im_start|>system\n{SYSTEM_PROMPTS['ko']}<|im_end|>\n<|im_start|>user\n<image>\n무엇이 보이나요?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert SYSTEM_PROMPTS["zh"] in processor.apply_chat_template(turn, add_generation_prompt=True, lang="zh")
    own = [{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}]
    rendered = processor.apply_chat_template(own, add_generation_prompt=False)
    assert rendered.startswith("<|im_start|>system\nMine.<|im_end|>") and SYSTEM_PROMPTS["ko"] not in rendered
    # the processor expands the one placeholder to one token per image feature
    from PIL import Image

    batch = processor(images=Image.new("RGB", (90, 70)), text=korean, return_tensors="pt")
    config = json.loads((tiny_llava / "config.json").read_text())
    assert int((batch["input_ids"] == config["image_token_index"]).sum()) == config["image_seq_length"] == 16


def test_loss_masks_everything_but_assistant_answers(tiny_llava: Path) -> None:
    from transformers import AutoProcessor

    from xlang.vlm.data import to_messages
    from xlang.vlm.train import IGNORE_INDEX, encode_conversation, encode_plain

    processor = AutoProcessor.from_pretrained(tiny_llava)
    image_token_id = json.loads((tiny_llava / "config.json").read_text())["image_token_index"]
    for record_id in ("coins-ko-conversation", "rocket-zh-location-centric", "astronaut-en-caption"):
        record = next(r for r in seed_records() if r["id"] == record_id)
        messages = to_messages(record)
        ids, labels = encode_conversation(
            messages, processor.tokenizer, processor.chat_template, lang=record["lang"], num_image_tokens=16
        )
        assert len(ids) == len(labels) and ids.count(image_token_id) == 16
        spans, current = [], []
        for token, label in zip(ids, labels, strict=True):
            if label != IGNORE_INDEX:
                assert label == token
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        assert [processor.tokenizer.decode(span) for span in spans] == [a + "<|im_end|>" for a in answers]
        image_positions = [i for i, token in enumerate(ids) if token == image_token_id]
        assert all(labels[i] == IGNORE_INDEX for i in image_positions)
    # stage 1's plain format (LLaVA-1.5): image tokens, newline, caption, end token; only the caption learns
    caption = next(r for r in seed_records() if r["id"] == "coins-ko-caption")
    ids, labels = encode_plain(to_messages(caption), processor.tokenizer, num_image_tokens=16)
    assert ids[:16] == [image_token_id] * 16 and all(label == IGNORE_INDEX for label in labels[:17])
    learned = processor.tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])
    assert learned == caption["conversations"][1]["value"] + "<|im_end|>"


def test_language_weights_steer_sampling() -> None:
    from collections import Counter

    from xlang.vlm.train import Sample, sample_order

    samples = [Sample(f"{lang}{i}", lang, [1], [1], None) for lang in LANGS for i in range(5)]
    order = sample_order(samples, {"ko": 3.0, "en": 1.0}, seed=1)
    drawn = Counter(samples[next(order)].lang for _ in range(4000))
    assert drawn["zh"] == 0 and 2.6 < drawn["ko"] / drawn["en"] < 3.4
    one, two = sample_order(samples, {}, seed=7), sample_order(samples, {}, seed=7)
    assert [next(one) for _ in range(50)] == [next(two) for _ in range(50)]  # a pure function of the seed
    per_pass = sample_order(samples, {"en": 1.0}, seed=3)
    assert sorted(next(per_pass) for _ in range(5)) == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------------------- training


def _train(model_dir: Path, records: list[dict[str, Any]], out_dir: Path, **overrides: Any) -> Any:
    from xlang.vlm.config import InstructConfig
    from xlang.vlm.train import train_vit_stage

    settings = {"steps": 4, "micro_batch": 2, "lr": 5e-3, "log_every": 1, "progress": False, "seed": 3, **overrides}
    return train_vit_stage(model_dir, records, InstructConfig(**settings), out_dir, default_lang="ko")


@pytest.mark.slow
def test_resumed_stage_ends_with_the_same_weights(tiny_llava: Path, tmp_path: Path, monkeypatch: Any) -> None:
    from xlang.vlm import train

    records = [r for r in seed_records("train") if r["task"] in ("caption", "object-centric")][:24]
    whole = _train(tiny_llava, records, tmp_path / "whole", save_every=2)

    original = train.VitBatches.__call__

    def interrupted(self: Any, step_offset: int, rank: int, world: int) -> Any:
        for index, batch in enumerate(original(self, step_offset, rank, world)):
            if step_offset == 0 and index == 2 * self.grad_accum:
                raise KeyboardInterrupt("simulated kill after step 2")
            yield batch

    monkeypatch.setattr(train.VitBatches, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_llava, records, tmp_path / "resumed", save_every=2)
    assert (tmp_path / "resumed" / "run" / "checkpoints" / "step-000002").is_dir()
    assert not (tmp_path / "resumed" / "model").exists()  # nothing exported by the killed run
    resumed = _train(tiny_llava, records, tmp_path / "resumed", save_every=2)
    assert resumed.steps == whole.steps == 4
    a, b = _tensors(whole.model_dir), _tensors(resumed.model_dir)
    assert a.keys() == b.keys()
    changed = [k for k in a if "multi_modal_projector" in k or "layers.0.self_attn.q_proj" in k]
    assert changed and all((a[k] - b[k]).abs().max() == 0 for k in a)
    before = _tensors(tiny_llava)
    assert any((before[k] - a[k]).abs().max() > 0 for k in changed)  # training did change these
    again = _train(tiny_llava, records, tmp_path / "resumed", save_every=2)
    assert again.already_done


def _bad_input_file(folder: Path) -> Path:
    from xlang.vlm.images import export_png

    folder.mkdir(parents=True)
    export_png("skimage:astronaut", folder / "good.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = [r for r in seed_records("train") if r["image"] == "skimage:astronaut" and r["lang"] == "ko"]
    rows = [{**r, "image": "good.png"} for r in good]
    answer = {"from": "gpt", "value": "답"}
    ask = {"from": "human", "value": "<image>\n무엇인가요?"}
    rows += [
        {"id": "corrupt", "image": "corrupt.png", "lang": "ko", "task": "caption", "conversations": [ask, answer]},
        {"id": "missing", "image": "nowhere.png", "lang": "ko", "task": "caption", "conversations": [ask, answer]},
        {"id": "no-answer", "image": "good.png", "lang": "ko", "task": "caption", "conversations": [ask]},
        {
            "id": "token-mismatch",
            "image": "good.png",
            "lang": "ko",
            "task": "caption",
            "conversations": [ask, {"from": "gpt", "value": "the <image> token in an answer"}],
        },
        {
            "id": "two-placeholders",
            "image": "good.png",
            "lang": "ko",
            "task": "caption",
            "conversations": [{"from": "human", "value": "<image>\n<image>\n?"}, answer],
        },
    ]
    path = folder / "mixed.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def test_bad_samples_are_reported_skipped_or_stop_cleanly(tiny_llava: Path, tmp_path: Path) -> None:
    from xlang.vlm.data import read_vit_jsonl

    path = _bad_input_file(tmp_path / "data")
    records = read_vit_jsonl(path)
    with pytest.raises(XlangError, match="on_bad_sample='stop'") as stopped:
        _train(tiny_llava, records, tmp_path / "strict", steps=1, on_bad_sample="stop")
    assert "mixed.jsonl [corrupt]" in str(stopped.value)
    assert not (tmp_path / "strict").exists()

    result = _train(tiny_llava, records, tmp_path / "lenient", steps=1)
    reasons = {s.id: s.reason for s in result.skipped}
    assert set(reasons) == {"corrupt", "missing", "no-answer", "token-mismatch", "two-placeholders"}
    assert "cannot be decoded" in reasons["corrupt"] and "does not exist" in reasons["missing"]
    assert "no assistant turn" in reasons["no-answer"]
    assert "32 image tokens after tokenization, the tower gives 16" in reasons["token-mismatch"]
    assert "32 image tokens after tokenization, the tower gives 16" in reasons["two-placeholders"]
    assert all(s.source == str(path) for s in result.skipped)
    assert result.samples == 5
    written = [json.loads(line) for line in (tmp_path / "lenient" / "skipped.jsonl").read_text().splitlines()]
    assert {row["id"] for row in written} == set(reasons)

    only_bad = [r for r in records if r["id"] in reasons]
    with pytest.raises(XlangError, match="no usable sample"):
        _train(tiny_llava, only_bad, tmp_path / "none", steps=1)
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_report_puts_answers_beside_thumbnails(tiny_llava: Path, tmp_path: Path, test_cache_dir: Path) -> None:
    from PIL import Image

    from xlang import plugins
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings
    from xlang.vlm.report import before_after_report

    resolver = Resolver(XlangSettings(cache_dir=test_cache_dir), plugins.make_plugin_manager())
    files = before_after_report(
        tiny_llava,
        tiny_llava,
        seed_records("heldout"),
        tmp_path / "report",
        languages=[spec(code) for code in ("ko", "en", "zh")],
        fetch_file=resolver.fetch_file,
        max_new_tokens=3,
    )
    rows = json.loads(files.json.read_text())
    assert len(rows) == 9 and [row["lang"] for row in rows[:3]] == ["ko", "en", "zh"]
    assert all(row["before"] == row["after"] for row in rows)  # the same model twice: greedy is deterministic
    # languages with scripts are scored by their own target_share; English has none to score
    assert all((row["before_share"] is None) == (row["lang"] == "en") for row in rows)
    markdown = files.markdown.read_text()
    for key in ("coffee", "chelsea", "flower"):
        assert f"thumbnails/{key}.png" in markdown and (tmp_path / "report" / "thumbnails" / f"{key}.png").is_file()
    assert "컵 안에는 무엇이 들어 있나요?" in markdown
    assert Image.open(files.png).size[1] > 600
