"""Write a LLaVA folder that plain `transformers` loads, and prove it in a process without xlang.

The folder is what `LlavaForConditionalGeneration.save_pretrained` and `LlavaProcessor.save_pretrained`
write (safetensors, processor and tokenizer files, `chat_template.jinja`), plus `xlang.json` with where
it came from. It is written to a hidden sibling folder and renamed into place, so a crash leaves the
previous folder or none, never half of one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from xlang.atomic import write_folder_atomically
from xlang.errors import XlangError

PROVENANCE_FILE = "xlang.json"


def save_llava(model: Any, processor: Any, target: Path, *, provenance: dict[str, Any] | None = None) -> Path:
    """Save model + processor to `target` atomically (an existing folder is replaced only once the new one is
    complete). LoRA layers must be merged before (see `xlang.vlm.train.merged_llava`)."""
    target = Path(target)
    if any("lora_" in name for name, _ in model.named_parameters()):
        raise XlangError("the LLaVA still holds LoRA layers; merge them before saving a plain transformers folder")

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance or {}, indent=2, ensure_ascii=False, default=str))

    return write_folder_atomically(target, write)


_PLAIN_SCRIPT = textwrap.dedent(
    r"""
    import importlib.abc, importlib.util, json, sys

    class _NoXlang(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "xlang" or name.startswith("xlang.") or name.startswith("xlang_"):
                raise ModuleNotFoundError(f"{name} is blocked: this check runs with plain transformers")
            return None

    sys.meta_path.insert(0, _NoXlang())
    sys.path = [p for p in sys.path if p not in ("", ".")]
    request = json.loads(sys.argv[1])
    try:
        importlib.util.find_spec("xlang")
        xlang_found = True
    except ModuleNotFoundError:
        xlang_found = False

    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration, pipeline

    torch.manual_seed(0)
    folder = request["folder"]
    image = Image.open(request["image"]).convert("RGB")
    # plain transformers, in a process without xlang: safetensors only, no remote code
    processor = AutoProcessor.from_pretrained(folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder, use_safetensors=True)
    model.eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request["question"]}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=request["max_new_tokens"], do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    content = [{"type": "image", "image": image}, {"type": "text", "text": request["question"]}]
    chat = [{"role": "user", "content": content}]
    result = pipe(text=chat, max_new_tokens=request["max_new_tokens"], return_full_text=False,
                  generate_kwargs={"do_sample": False})
    print(json.dumps({
        "xlang_importable": xlang_found,
        "xlang_loaded": any(name == "xlang" or name.startswith("xlang.") for name in sys.modules),
        "model_class": type(model).__name__,
        "generate": answer,
        "pipeline": result[0]["generated_text"],
    }, ensure_ascii=False))
    """
)


def answer_without_xlang(
    folder: Path, image_path: Path, question: str, *, max_new_tokens: int = 24, timeout: float = 600
) -> dict[str, Any]:
    """Load `folder` in a fresh Python with xlang blocked from import and answer `question` about the image
    twice: `model.generate` and `pipeline("image-text-to-text")`. Returns both answers and what the child
    saw of xlang; raises XlangError with the child's stderr when it fails."""
    request = json.dumps(
        {"folder": str(folder), "image": str(image_path), "question": question, "max_new_tokens": max_new_tokens}
    )
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as empty:
        completed = subprocess.run(
            [sys.executable, "-c", _PLAIN_SCRIPT, request],
            cwd=empty,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if completed.returncode != 0:
        raise XlangError(f"{folder} did not load with plain transformers:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])
