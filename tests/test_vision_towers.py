"""Vision towers through the `register_vision_towers` hook: the `dinov2-small` plugin (checked against ONNX
Runtime on real photos) and the built-in `hf` tower (Hugging Face folders, safetensors only)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from xlang import plugins
from xlang.errors import XlangError


def tower(name: str) -> Any:
    return plugins.get_strategy("vision_towers", name, plugins.make_plugin_manager())


def tiny_clip_vision(width: int = 32, image_size: int = 56) -> Any:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    return CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=14,
        )
    )


def clip_processor(size: int = 56) -> Any:
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.mark.slow
def test_dinov2_plugin_tower_matches_onnxruntime(test_cache_dir: Path) -> None:
    """The converted tower, loaded through the plugin, gives the ONNX graph's own backbone features."""
    import numpy as np
    import skimage.data
    import torch
    from xlang_dinov2.convert import (
        DINOV2_SMALL_ONNX,
        IMAGENET_MEAN,
        IMAGENET_STD,
        onnx_backbone_features,
    )

    from xlang.assets.wheels import wheel_member

    strategy = tower("dinov2-small")
    assert strategy.plugin == "dinov2"
    model, processor = strategy(cache_dir=test_cache_dir, image_size=None)
    assert type(model).__name__ == "Dinov2Model" and not model.training
    assert processor.crop_size == {"height": 224, "width": 224}
    assert tuple(processor.image_mean) == IMAGENET_MEAN and tuple(processor.image_std) == IMAGENET_STD
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 12
    assert (test_cache_dir / "models" / "dinov2-small" / "model.safetensors").is_file()
    pixels = processor(images=[skimage.data.coffee(), skimage.data.chelsea()], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ours = model(pixel_values=pixels).last_hidden_state.numpy()
    reference = onnx_backbone_features(wheel_member(DINOV2_SMALL_ONNX, test_cache_dir), pixels.numpy())
    assert ours.shape == reference.shape == (2, 257, 384)
    assert np.abs(ours - reference).max() < 1e-4
    # the two photos give different features: the weights are real, not a constant
    assert np.abs(ours[0] - ours[1]).mean() > 0.1
    # the tower honours a requested size (DINOv2 interpolates its position table)
    _, small = strategy(cache_dir=test_cache_dir, image_size=112)
    assert small.crop_size == {"height": 112, "width": 112}
    with pytest.raises(XlangError, match="takes no options"):
        strategy.configure({"size": 3})


def test_hf_tower_loads_vision_models_and_dual_encoders(tmp_path: Path, test_cache_dir: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from xlang.vlm.towers import tower_from_loader

    vision = tiny_clip_vision()
    vision.save_pretrained(tmp_path / "clip-vision")
    clip_processor().save_pretrained(tmp_path / "clip-vision")
    strategy = tower("hf")
    loader = functools.partial(strategy, options=strategy.configure({"path": str(tmp_path / "clip-vision")}))
    model, processor = loader(cache_dir=test_cache_dir, image_size=None)
    assert type(model).__name__ == "CLIPVisionModel" and processor.crop_size == {"height": 56, "width": 56}
    for name, weight in vision.state_dict().items():
        assert torch.equal(model.state_dict()[name], weight), name
    # through assembly's checks: 16 patches + the class token; CLIP works at its own size only
    assert tower_from_loader(loader, test_cache_dir, image_size=None, source="hf").num_image_tokens("full") == 17
    with pytest.raises(XlangError, match="position table is fixed"):
        tower_from_loader(loader, test_cache_dir, image_size=84, source="hf")

    # a dual encoder folder gives its vision half
    torch.manual_seed(1)
    dual = CLIPModel(
        CLIPConfig(
            text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 56,
                "patch_size": 14,
            },
            projection_dim=16,
        )
    )
    dual.save_pretrained(tmp_path / "clip-dual")
    clip_processor().save_pretrained(tmp_path / "clip-dual")
    model, _ = strategy(options={"path": str(tmp_path / "clip-dual")}, cache_dir=test_cache_dir, image_size=None)
    assert type(model).__name__ == "CLIPVisionModel"
    loaded = {name.removeprefix("vision_model."): weight for name, weight in model.state_dict().items()}
    expected = {
        name.removeprefix("vision_model."): weight
        for name, weight in dual.state_dict().items()
        if name.startswith("vision_model.")
    }
    assert expected.keys() == loaded.keys()
    assert all(torch.equal(loaded[name], weight) for name, weight in expected.items())


def test_hf_tower_refuses_pickles_and_bad_options(tmp_path: Path, test_cache_dir: Path) -> None:
    import torch

    strategy = tower("hf")
    with pytest.raises(XlangError, match=r"invalid options for vision tower 'hf': path: Field required"):
        strategy.configure({})
    with pytest.raises(XlangError, match=r"vision tower 'hf' has no option 'revision' \(its options: path\)"):
        strategy.configure({"path": "a/b", "revision": "main"})
    with pytest.raises(XlangError, match="neither an existing folder nor a hub id"):
        strategy(options={"path": str(tmp_path / "nowhere" / "x")}, cache_dir=test_cache_dir, image_size=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(XlangError, match="has no config.json"):
        strategy(options={"path": str(tmp_path / "empty")}, cache_dir=test_cache_dir, image_size=None)

    # weights only as a pickle: refused, never unpickled
    folder = tmp_path / "pickled"
    vision = tiny_clip_vision()
    vision.config.save_pretrained(folder)
    clip_processor().save_pretrained(folder)
    torch.save(vision.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(XlangError, match="has no safetensors weights; xlang loads safetensors only"):
        strategy(options={"path": str(folder)}, cache_dir=test_cache_dir, image_size=None)


def test_a_loader_that_breaks_the_contract_is_named(test_cache_dir: Path) -> None:
    from xlang.vlm.towers import tower_from_loader

    def returns_a_model_only(cache_dir: Path, image_size: int | None) -> Any:
        return tiny_clip_vision()

    with pytest.raises(XlangError, match=r"vision tower 'broken' returned CLIPVisionModel, not \(vision_model"):
        tower_from_loader(returns_a_model_only, test_cache_dir, image_size=None, source="broken")
