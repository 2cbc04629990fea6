"""The recipe's LLaVA stages driven directly, with what plugins offer: a vision tower registered by a test
plugin (a tiny random CLIP), a `chat_template` hook that sees the base model's real template, and
visual-instruction data from the language plugins' `vit_data` or from a plugin's own URI scheme.

The language model is a 2-layer random Llama with SmolLM2's real tokenizer and chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from xlang_recipes.llava_stages import AlignStageConfig, VitConfig, align, resolve_align, vit, vit_records

from xlang import hookimpl, plugins
from xlang.contract import Options, StageContext
from xlang.errors import XlangError
from xlang.resolve import Resolver
from xlang.settings import XlangSettings
from xlang.spec import ChatBits, LanguageSpec
from xlang.vlm.config import AlignConfig, AssembleConfig, InstructConfig

TEMPLATE_MARK = "{#- chosen by the vision-test plugin -#}\n"


class TinyTowerOptions(Options):
    width: int = Field(default=32, gt=0)
    layers: int = Field(default=2, gt=0)


def tiny_clip_tower(image_size: int | None, options: TinyTowerOptions) -> tuple[Any, Any]:
    """A random CLIP vision tower at the requested size (56 px by default) and a processor sized to it."""
    import torch
    import transformers
    from transformers import CLIPVisionConfig, CLIPVisionModel

    size = image_size or 56
    torch.manual_seed(0)
    model = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=options.width,
            intermediate_size=2 * options.width,
            num_hidden_layers=options.layers,
            num_attention_heads=2,
            image_size=size,
            patch_size=14,
        )
    )
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return model, processor_class(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


class VisionTestPlugin:
    """Offers the tower `tiny-clip`, a chat template built on the base model's, and `memory://` data."""

    def __init__(self, records: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.templates_seen: list[tuple[str, str | None]] = []
        self.records = records or {}

    @hookimpl
    def register_vision_towers(self, register: Any) -> None:
        register("tiny-clip", tiny_clip_tower, options=TinyTowerOptions)

    @hookimpl
    def chat_template(self, language: Any, base_template: Any) -> Any:
        self.templates_seen.append((language.code, base_template))
        return TEMPLATE_MARK + base_template

    @hookimpl
    def load_vit_data(self, uri: str, cache_dir: Any) -> Any:
        if not uri.startswith("memory://"):
            return None
        return [dict(record, source=uri) for record in self.records[uri.removeprefix("memory://")]]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    from tiny_models import save_tiny_chat_lm

    return save_tiny_chat_lm(tmp_path_factory.mktemp("tiny-lm"), smollm2_dir)


def context_for(
    run_dir: Path,
    stage: str,
    config: Any,
    resolver: Resolver,
    *,
    base_model: str,
    language: LanguageSpec | None = None,
    companions: tuple[LanguageSpec, ...] | None = None,
    manifest: dict[str, Any] | None = None,
) -> StageContext:
    """The context the runner would give the stage (its output folder made beforehand, as the runner does)."""
    language = language or resolver.language("ko")
    out_dir = run_dir / stage
    out_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f".{stage}.work").mkdir(exist_ok=True)
    return StageContext(
        run_dir=run_dir,
        out_dir=out_dir,
        language=language,
        companions=resolver.companions(language) if companions is None else companions,
        settings=resolver.settings,
        config=config,
        base_model=base_model,
        manifest=manifest or {"stages": {}},
        work_dir=run_dir / f".{stage}.work",
        resolver=resolver,
    )


def make_resolver(cache_dir: Path, plugin: object) -> Resolver:
    pm = plugins.make_plugin_manager()
    pm.register(plugin, name="vision-test")
    return Resolver(XlangSettings(cache_dir=cache_dir, language="ko"), pm)


def quick(config_class: type, **overrides: Any) -> Any:
    return config_class(**{"steps": 2, "micro_batch": 2, "log_every": 1, "progress": False, **overrides})


@pytest.fixture(scope="module")
def llava_run(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path, test_cache_dir: Path) -> dict[str, Any]:
    """The align stage with the plugin's tower and template, then the vit stage with its report."""
    plugin = VisionTestPlugin()
    resolver = make_resolver(test_cache_dir, plugin)
    run_dir = tmp_path_factory.mktemp("llava-run")
    config = AlignStageConfig(
        assemble=AssembleConfig(vision_tower="tiny-clip", vision_tower_options={"width": 48}, image_size=56),
        train=quick(AlignConfig, lr=2e-3),
    )
    config = resolve_align(config, resolver.language("ko"), resolver)
    aligned = align(context_for(run_dir, "align", config, resolver, base_model=str(tiny_lm)))
    manifest = {"stages": {"align": {"status": "done", "output": "align", "model_dir": "model"}}}
    vit_config = VitConfig(train=quick(InstructConfig, lang_weights={"ko": 1.0, "en": 1.0}), report_images=1)
    tuned = vit(context_for(run_dir, "vit", vit_config, resolver, base_model=str(tiny_lm), manifest=manifest))
    return {"run": run_dir, "plugin": plugin, "config": config, "align": aligned, "vit": tuned}


def test_align_assembles_the_plugin_tower_with_the_plugin_template(llava_run: dict[str, Any], tiny_lm: Path) -> None:
    from transformers import AutoProcessor, AutoTokenizer

    # the tower's options were validated and completed with their defaults before the stage ran
    assert llava_run["config"].assemble.vision_tower_options == {"width": 48, "layers": 2}
    folder = llava_run["run"] / "align" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    assert config["vision_config"]["hidden_size"] == 48 and config["vision_config"]["num_hidden_layers"] == 2
    assert config["image_seq_length"] == 16  # 4x4 patches of 14 px, the class token dropped
    # the chat_template hook saw the base model's real template, and its answer is the LLaVA's template
    base_template = AutoTokenizer.from_pretrained(tiny_lm).chat_template
    assert base_template and "<|im_start|>" in base_template
    assert llava_run["plugin"].templates_seen == [("ko", base_template)]
    assert AutoProcessor.from_pretrained(folder).chat_template == TEMPLATE_MARK + base_template
    # stage 1 read the captions of the target's and its companion's vit_data, held-aside photos left out
    metrics = llava_run["align"].metrics
    assert metrics["samples"] == 19 * 2 and metrics["steps"] == 2 and metrics["skipped"] == 0
    assert llava_run["align"].model_dir == "model" and "tiny-clip" in llava_run["align"].report


def test_vit_trains_on_the_run_languages_and_reports_held_aside_answers(llava_run: dict[str, Any]) -> None:
    tuned = llava_run["vit"]
    assert tuned.metrics["samples"] == 2 * 19 * 5  # every training record of ko and en: five tasks per photo
    rows = json.loads((llava_run["run"] / "vit" / "answers" / "report.json").read_text())
    assert [row["lang"] for row in rows] == ["ko", "en"]  # the target first, then its companion
    assert {row["image"] for row in rows} == {"skimage:coffee"}  # report_images=1: the first held-aside photo
    ko, en = rows
    assert ko["before_share"] is not None and en["before_share"] is None  # only a language with scripts is scored
    assert (llava_run["run"] / "vit" / "answers" / "report.png").is_file()
    assert "vit/answers/report.md" in tuned.report


def test_a_bad_tower_name_or_option_stops_before_any_work(test_cache_dir: Path) -> None:
    resolver = make_resolver(test_cache_dir, VisionTestPlugin())
    ko = resolver.language("ko")
    bad_option = AlignStageConfig(assemble=AssembleConfig(vision_tower="tiny-clip", vision_tower_options={"depth": 3}))
    with pytest.raises(
        XlangError, match=r"vision tower 'tiny-clip' has no option 'depth' \(its options: width, layers"
    ):
        resolve_align(bad_option, ko, resolver)
    unknown = AlignStageConfig(assemble=AssembleConfig(vision_tower="nope"))
    with pytest.raises(XlangError, match=r"unknown vision tower 'nope'; known: dinov2-small, hf, tiny-clip"):
        resolve_align(unknown, ko, resolver)


def test_a_target_language_without_vit_data_stops_with_the_fix(tmp_path: Path, test_cache_dir: Path) -> None:
    resolver = make_resolver(test_cache_dir, VisionTestPlugin())
    english = resolver.language("en")
    esperanto = LanguageSpec(code="eo", name="Esperanto", chat=ChatBits(system_prompt="Respondu."), companions=("en",))

    def context(stage: str, config: Any) -> StageContext:
        return context_for(
            tmp_path / "run", stage, config, resolver, base_model="unused", language=esperanto, companions=(english,)
        )

    with pytest.raises(XlangError, match=r"language 'eo' \(Esperanto\) has no visual-instruction data: add `vit_data`"):
        align(context("align", AlignStageConfig()))
    with pytest.raises(XlangError, match=r"or set stages\.vit\.data to a file://"):
        vit(context("vit", VitConfig()))
    # data that holds only the companion's records is refused too: the stage never learns English alone
    config = AlignStageConfig(data=english.vit_data)
    with pytest.raises(XlangError, match=r"holds no training record in Esperanto \('eo'\)"):
        align(context("align", config))
    assert not (tmp_path / "run" / ".align.work" / "assembled").exists()


def test_records_without_lang_count_as_their_language(tmp_path: Path, test_cache_dir: Path) -> None:
    """A language's own file may leave `lang` out (it is that language's); records from `data` without
    `lang` are the target's, and reach a plugin's URI scheme through `load_vit_data`."""
    record = {
        "id": "r1",
        "image": "skimage:astronaut",
        "task": "caption",
        "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A person."}],
    }
    held = dict(record, id="r2", split="heldout")
    data_file = tmp_path / "eo.jsonl"
    data_file.write_text(json.dumps(record) + "\n" + json.dumps(held) + "\n")
    resolver = make_resolver(test_cache_dir, VisionTestPlugin({"plain": [record]}))
    english = resolver.language("en")
    esperanto = LanguageSpec(
        code="eo", name="Esperanto", chat=ChatBits(system_prompt="Respondu."), vit_data=(f"file://{data_file}",)
    )
    context = context_for(
        tmp_path / "run",
        "align",
        AlignStageConfig(),
        resolver,
        base_model="unused",
        language=esperanto,
        companions=(english,),
    )
    records = vit_records(context, AlignStageConfig(), "stages.align.data")
    assert [(r["id"], r["lang"], r.get("split")) for r in records[:2]] == [("r1", "eo", None), ("r2", "eo", "heldout")]
    assert {r["lang"] for r in records[2:]} == {"en"} and len(records) == 2 + 110
    from_plugin = vit_records(context, AlignStageConfig(data=("memory://plain",)), "stages.align.data")
    assert from_plugin == [dict(record, source="memory://plain")]  # no lang: train_vit_stage's default_lang decides
    with pytest.raises(XlangError, match="no plugin loads visual-instruction data 's3://x'"):
        vit_records(context, AlignStageConfig(data=("s3://x",)), "stages.align.data")


def test_extra_data_joins_the_seed_records_with_its_weight(tmp_path: Path, test_cache_dir: Path) -> None:
    """`--vit-data FILE` adds generated records to the languages' seed records; the weights repeat or thin
    each group's training records, never the held-aside questions, and the same share on every call."""
    from xlang_recipes.llava_stages import vit_data_uri

    generated = [
        {
            "id": f"gen-{i}",
            "image": "skimage:coffee",
            "lang": "ko",
            "task": "object-centric",
            "conversations": [{"from": "human", "value": "<image>\n무엇이 있나요?"}, {"from": "gpt", "value": "커피."}],
        }
        for i in range(10)
    ]
    data_file = tmp_path / "generated.jsonl"
    data_file.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in generated))
    resolver = make_resolver(test_cache_dir, VisionTestPlugin())
    korean = resolver.language("ko")

    def records(**knobs: Any) -> list[dict[str, Any]]:
        context = context_for(
            tmp_path / "run", "vit", VitConfig(**knobs), resolver, base_model="unused", language=korean
        )
        return vit_records(context, VitConfig(**knobs), "stages.vit.data")

    seed = records()
    assert not any(r["id"].startswith("gen-") for r in seed)
    both = records(extra_data=(str(data_file),))
    assert len(both) == len(seed) + 10 and [r["id"] for r in both[len(seed) :]] == [f"gen-{i}" for i in range(10)]
    heavy = records(extra_data=(str(data_file),), extra_weight=2.5, seed_weight=0.5)
    extra_ids = [r["id"] for r in heavy if r["id"].startswith("gen-")]
    assert len(extra_ids) == 25 and set(extra_ids) == {f"gen-{i}" for i in range(10)}
    seed_train = [r for r in seed if r.get("split") != "heldout"]
    heavy_seed = [r for r in heavy if not r["id"].startswith("gen-")]
    assert len([r for r in heavy_seed if r.get("split") != "heldout"]) == round(0.5 * len(seed_train))
    assert len([r for r in heavy_seed if r.get("split") == "heldout"]) == len(seed) - len(seed_train)
    assert heavy == records(extra_data=(str(data_file),), extra_weight=2.5, seed_weight=0.5)
    with pytest.raises(XlangError, match=r"--vit-data missing\.jsonl: no such file"):
        vit_data_uri("missing.jsonl")
