"""One model folder, loaded once, answering OpenAI chat messages: the engine behind `xlang serve` and the
`local` teacher.

A LLaVA folder loads as `LlavaForConditionalGeneration` with its processor, a causal-LM folder as
`AutoModelForCausalLM` with its tokenizer; both render the conversation with the folder's own chat template
(messages as text with the image placeholder, as the VIT stages train on it). Decoding is a plain loop over
the model's KV cache, so sampling is seeded per request (a `torch.Generator`), a stop string ends the reply
exactly, text streams out as it completes, and the byte-level constraints of `constraints.py` apply at each
step. Generations run one at a time (a lock); there is no batching of concurrent requests.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import inspect
import io
import json
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.vlm.data import IMAGE_PLACEHOLDER

DTYPES = ("float32", "bfloat16", "float16")
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,(?P<data>.*)$", re.DOTALL)
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class RequestError(Exception):
    """A request the model cannot answer as sent (an image for a text-only model, a bad image URL...):
    the client's mistake, answered with HTTP 400 and this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Generation:
    """A finished reply: its text, the token counts (`usage`) and why it ended (`stop` or `length`)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    reply_seconds: float = 0.0
    """Seconds of decoding after the pass over the prompt: what a reader watching the reply stream waits for
    (0 where not timed)."""


@dataclass(frozen=True)
class PreparedRequest:
    """A checked, encoded request, ready to decode."""

    inputs: dict[str, Any]
    prompt_tokens: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stops: tuple[str, ...]
    constraint: Any | None


@dataclass(frozen=True)
class _Prompt:
    messages: list[dict[str, str]]
    images: list[Any]


class _ReplyText:
    """Token ids in, text out: through the byte table where there is one (complete characters only until
    the end), else through the tokenizer's own decode."""

    def __init__(self, tokenizer: Any, tokens: Any) -> None:
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.ids: list[int] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.strip_space = tokens is not None and tokens.strip_leading_space
        self.text = ""

    def push(self, token_id: int) -> None:
        self.ids.append(token_id)
        if self.tokens is None:
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd")
            return
        self.text += self.decoder.decode(self.tokens.text([token_id]))
        if self.strip_space and self.text:
            self.text = self.text.removeprefix(" ")
            self.strip_space = False

    def finish(self, *, drop_incomplete: bool) -> str:
        if self.tokens is None:
            decoded = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            return decoded.rstrip("\ufffd") if drop_incomplete else decoded
        return self.text if drop_incomplete else self.text + self.decoder.decode(b"", final=True)


class ChatModel:
    """A loaded model folder; `generate` is thread-safe and serialised."""

    def __init__(self, folder: Path, model: Any, tokenizer: Any, processor: Any | None, device: str) -> None:
        import torch

        from xlang.serve.constraints import token_bytes

        self.folder = folder
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.device = torch.device(device)
        self.chat_template = (processor.chat_template if processor is not None else None) or tokenizer.chat_template
        self.image_token = (
            (getattr(processor, "image_token", None) or IMAGE_PLACEHOLDER) if processor is not None else None
        )
        config = model.config
        text_config = getattr(config, "text_config", None) or config
        self.context_length = int(getattr(text_config, "max_position_embeddings", 0) or 0) or None
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.eos_ids = self._eos_ids()
        self.suppressed = self._suppressed_ids()
        self.tokens = token_bytes(tokenizer, self.vocab_size)
        forward = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"
        self._keep_last_logits = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        self._constraints: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self._constraints_lock = threading.Lock()

    @property
    def is_vision(self) -> bool:
        return self.processor is not None

    @property
    def supports_constraints(self) -> bool:
        """Whether the tokenizer's bytes are known (byte-level BPE or SentencePiece with byte fallback)."""
        return self.tokens is not None

    @classmethod
    def load(cls, folder: Path | str, *, device: str = "cpu", dtype: str | None = None) -> ChatModel:
        """Load a LLaVA or causal-LM folder (safetensors only); XlangError, naming the folder, when it is not one."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise XlangError(f"model folder {str(folder)!r} does not exist; pass a folder that xlang wrote")
        if not (folder / "config.json").is_file():
            if (folder / "adapter_config.json").is_file():
                raise XlangError(
                    f"{str(folder)!r} is a PEFT adapter, which xlang serve does not load; serve the merged model "
                    "folder next to it (xlang writes one after pretraining) or merge it with peft's merge_and_unload"
                )
            raise XlangError(f"{str(folder)!r} has no config.json: it is not a model folder")
        if not any(folder.glob("*.safetensors")):
            raise XlangError(f"{str(folder)!r} has no .safetensors weights; xlang serve loads safetensors only")
        if dtype is not None and dtype not in DTYPES:
            raise XlangError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise XlangError(f"{str(folder / 'config.json')!r} cannot be read: {error}") from error
        import torch

        from xlang.assets.loading import load_pretrained

        options: dict[str, Any] = {"use_safetensors": True}
        if dtype is not None:
            options["dtype"] = getattr(torch, dtype)
        try:
            if config.get("model_type") == "llava":
                from transformers import AutoProcessor, LlavaForConditionalGeneration

                processor = load_pretrained(AutoProcessor, folder, weights=False)
                model = load_pretrained(LlavaForConditionalGeneration, folder, **options)
                tokenizer = processor.tokenizer
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                processor = None
                tokenizer = load_pretrained(AutoTokenizer, folder, weights=False)
                model = load_pretrained(AutoModelForCausalLM, folder, **options)
        except (OSError, ValueError, KeyError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise XlangError(f"{str(folder)!r} does not load as a LLaVA or causal LM: {first_line}") from error
        model.to(device).eval()
        loaded = cls(folder, model, tokenizer, processor, device)
        if not loaded.chat_template:
            raise XlangError(f"{str(folder)!r} has no chat template; xlang serve answers chat messages only")
        return loaded

    def _eos_ids(self) -> tuple[int, ...]:
        ids: set[int] = set()
        generation = getattr(self.model, "generation_config", None)
        for value in (getattr(generation, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return tuple(sorted(ids))

    def _suppressed_ids(self) -> tuple[int, ...]:
        """Never sampled: the image placeholder and what the folder's generation config suppresses."""
        ids = set(getattr(getattr(self.model, "generation_config", None), "suppress_tokens", None) or ())
        image_index = getattr(self.model.config, "image_token_index", None)
        if image_index is None:
            image_index = getattr(self.model.config, "image_token_id", None)
        if image_index is not None:
            ids.add(int(image_index))
        return tuple(sorted(i for i in ids if 0 <= i < self.vocab_size))

    # ------------------------------------------------------------------------------------------ prompt

    def _parse(self, messages: Any) -> _Prompt:
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list of chat messages")
        rendered: list[dict[str, str]] = []
        images: list[Any] = []
        for position, message in enumerate(messages):
            if not isinstance(message, dict):
                raise RequestError(f"messages[{position}] is not an object")
            role = _ROLES.get(str(message.get("role")))
            if role is None:
                raise RequestError(
                    f"messages[{position}].role {message.get('role')!r} is not supported; use system, user or assistant"
                )
            content = message.get("content")
            if content is None:
                content = ""
            if isinstance(content, str):
                rendered.append({"role": role, "content": content})
                continue
            if not isinstance(content, list):
                raise RequestError(f"messages[{position}].content must be a string or a list of parts")
            text = ""
            for index, part in enumerate(content):
                where = f"messages[{position}].content[{index}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    text += str(part.get("text", ""))
                elif kind == "image_url":
                    images.append(self._image(part.get("image_url"), where))
                    text += f"{self.image_token}\n"
                else:
                    raise RequestError(f"{where} has type {kind!r}; only text and image_url parts are supported")
            rendered.append({"role": role, "content": text})
        if images and not self.is_vision:
            raise RequestError(f"model {self.folder.name!r} is a text-only model and cannot read images")
        if len(images) > 1:
            raise RequestError(f"model {self.folder.name!r} reads one image per conversation; got {len(images)}")
        return _Prompt(rendered, images)

    def _image(self, reference: Any, where: str) -> Any:
        url = reference.get("url") if isinstance(reference, dict) else reference
        if not isinstance(url, str):
            raise RequestError(f"{where}.image_url needs a url")
        if url.startswith(("http://", "https://")):
            raise RequestError(
                f"{where}: image URLs are not fetched; send the image inline as a data:image/...;base64, URL"
            )
        match = _DATA_URL.match(url)
        if match is None:
            raise RequestError(f"{where}: the image must be a data:image/...;base64, URL")
        from PIL import Image, UnidentifiedImageError

        try:
            raw = base64.b64decode(match["data"], validate=True)
            with Image.open(io.BytesIO(raw)) as opened:
                return opened.convert("RGB")
        except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as error:
            raise RequestError(f"{where}: the image cannot be decoded ({error})") from error

    def encode(self, messages: Any, *, reply_language: LanguageSpec | None = None) -> dict[str, Any]:
        """The model inputs of a conversation, ending with the assistant's turn opened."""
        from jinja2 import TemplateError

        prompt = self._parse(messages)
        extra = {"lang": reply_language.code} if reply_language is not None else {}
        try:
            text = self.tokenizer.apply_chat_template(
                prompt.messages,
                chat_template=self.chat_template,
                tokenize=False,
                add_generation_prompt=True,
                **extra,
            )
        except (TemplateError, ValueError, TypeError) as error:  # e.g. the template's raise_exception()
            raise RequestError(f"the chat template refused the messages: {error}") from error
        try:
            if self.processor is not None:
                inputs = self.processor(
                    images=prompt.images or None, text=text, return_tensors="pt", add_special_tokens=False
                )
            else:
                inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        except ValueError as error:  # e.g. a literal image placeholder in the text and no image
            raise RequestError(f"the messages cannot be encoded: {error}") from error
        return {key: value.to(self.device) for key, value in inputs.items()}

    # -------------------------------------------------------------------------------------- constraints

    def constraint(self, *, valid_utf8: bool, reply_language: LanguageSpec | None) -> Any | None:
        """The byte constraint a request asks for (cached per rule), or None."""
        if not valid_utf8 and reply_language is None:
            return None
        if self.tokens is None:
            raise RequestError(
                f"model {self.folder.name!r} has a tokenizer whose bytes are unknown (neither byte-level nor "
                "SentencePiece); valid_utf8 and reply_language need one"
            )
        from xlang.serve.constraints import ByteConstraint, script_rule, utf8_rule

        if reply_language is not None:
            ranges = tuple((r.start, r.end) for r in (reply_language.reply_scripts or reply_language.scripts))
            key: Any = ("script", ranges)
        else:
            key = ("utf8",)
        with self._constraints_lock:
            constraint = self._constraints.get(key)
            if constraint is None:
                rule = script_rule(ranges) if reply_language is not None else utf8_rule()
                constraint = self._constraints[key] = ByteConstraint(self.tokens, rule, self.eos_ids)
        return constraint

    # --------------------------------------------------------------------------------------- generation

    def prepare(
        self,
        messages: Any,
        *,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        reply_language: LanguageSpec | None = None,
        valid_utf8: bool = False,
    ) -> PreparedRequest:
        """Check and encode a request without running the model: every RequestError surfaces here, so a
        server can answer 400 before it starts a stream."""
        if max_tokens < 1:
            raise RequestError("max_tokens must be at least 1")
        if temperature < 0:
            raise RequestError("temperature must be at least 0")
        if not 0 < top_p <= 1:
            raise RequestError("top_p must be in (0, 1]")
        stops = (stop,) if isinstance(stop, str) else tuple(s for s in (stop or ()) if s)
        inputs = self.encode(messages, reply_language=reply_language)
        constraint = self.constraint(valid_utf8=valid_utf8, reply_language=reply_language)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        if self.context_length is not None:
            if prompt_tokens >= self.context_length:
                raise RequestError(
                    f"the prompt has {prompt_tokens} tokens; model {self.folder.name!r} reads at most "
                    f"{self.context_length}"
                )
            max_tokens = min(max_tokens, self.context_length - prompt_tokens)
        return PreparedRequest(inputs, prompt_tokens, max_tokens, temperature, top_p, seed, stops, constraint)

    def run(
        self,
        request: PreparedRequest,
        *,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Generation:
        """Decode a prepared request (one at a time); `on_text` gets each piece of text once it is final
        (never past a stop string), `cancelled` is polled between tokens (a client that went away)."""
        with self._lock:
            return self._decode(request, on_text, cancelled)

    def generate(
        self,
        messages: Any,
        *,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        reply_language: LanguageSpec | None = None,
        valid_utf8: bool = False,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Generation:
        """Answer OpenAI chat `messages` (`prepare`, then `run`). Temperature 0 is greedy; with a `seed` a
        sampled reply is the same every time."""
        prepared = self.prepare(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            reply_language=reply_language,
            valid_utf8=valid_utf8,
        )
        return self.run(prepared, on_text=on_text, cancelled=cancelled)

    def write(self, messages: Any, reply: str) -> Generation:
        """Decode `reply` as if the model had chosen it: the steps of greedy generation (a pass over the cache
        per token, the logits read, a token picked, the text detokenized), each picked token replaced by the
        reply's next one, then the end of the turn. What it costs this model to write that text, whatever it
        would have written itself: a tokenizer's shorter spelling shows as speed even in a model that cannot
        yet write the language well."""
        if not reply:
            raise RequestError("the reply to write is empty")
        if not self.eos_ids:
            raise RequestError(f"model {self.folder.name!r} has no end-of-turn token to end the reply with")
        forced = [*self.tokenizer(reply, add_special_tokens=False)["input_ids"], self.eos_ids[0]]
        request = self.prepare(messages, max_tokens=len(forced), temperature=0.0, seed=0)
        if request.max_tokens < len(forced):
            raise RequestError(
                f"the prompt and the reply ({len(forced)} tokens) do not fit model {self.folder.name!r}'s context"
            )
        with self._lock:
            return self._decode(request, None, None, forced=forced)

    def choose(self, messages: Any, choices: Sequence[str]) -> Generation:
        """The reply among `choices` that the model finds most likely after the prompt (summed log-probability
        of its tokens, then the end of the turn): a judge that is asked for a verdict always gives one, and a
        small model can be held to a format (vLLM's `guided_choice`)."""
        import torch

        choices = [choice for choice in choices if choice]
        if not choices:
            raise RequestError("guided_choice must list at least one non-empty string")
        inputs = self.encode(messages)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        end = self.eos_ids[:1]
        encoded = [self.tokenizer(choice, add_special_tokens=False)["input_ids"] + list(end) for choice in choices]
        longest = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        continuation = torch.tensor([ids + [pad] * (longest - len(ids)) for ids in encoded], device=self.device)
        real = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in encoded], device=self.device)
        with self._lock, torch.inference_mode():
            output = self.model(**inputs, use_cache=True)
            cache = output.get("cache", None)
            if cache is None:
                cache = output.get("past_key_values", None)
            cache.batch_repeat_interleave(len(choices))
            first = torch.log_softmax(output.logits[0, -1].float(), dim=-1)
            attention = torch.cat(
                [torch.ones(len(choices), prompt_tokens, dtype=real.dtype, device=self.device), real], dim=1
            )
            positions = torch.arange(prompt_tokens, prompt_tokens + longest, device=self.device).expand(
                len(choices), -1
            )
            later = self.model(
                input_ids=continuation,
                attention_mask=attention,
                position_ids=positions,
                use_cache=True,
                **{self._cache_argument: cache},
            )
            logits = torch.log_softmax(later.logits.float(), dim=-1)
        scores = []
        for row, ids in enumerate(encoded):
            total = float(first[ids[0]])
            for position in range(1, len(ids)):
                total += float(logits[row, position - 1, ids[position]])
            scores.append(total)
        best = max(range(len(choices)), key=scores.__getitem__)
        return Generation(choices[best], prompt_tokens, len(encoded[best]), "stop")

    def _decode(
        self,
        request: PreparedRequest,
        on_text: Callable[[str], None] | None,
        cancelled: Callable[[], bool] | None,
        *,
        forced: Sequence[int] | None = None,
    ) -> Generation:
        """Generate; with `forced`, every picked token is replaced by the next of those ids (`write`)."""
        import torch

        from xlang.serve.constraints import ConstraintProcessor

        seed = request.seed if request.seed is not None else random.getrandbits(63)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        constraint, stops = request.constraint, request.stops
        processor = ConstraintProcessor(constraint, request.prompt_tokens) if constraint is not None else None
        sequence = request.inputs["input_ids"][0].tolist()
        reply = _ReplyText(self.tokenizer, self.tokens)
        emitted = 0
        hold = max((len(s) for s in stops), default=1) - 1
        finish_reason = "length"
        completion_tokens = 0
        text: str | None = None
        model_inputs: dict[str, Any] = {**request.inputs, "use_cache": True}
        replying_since: float | None = None
        with torch.inference_mode():
            while completion_tokens < request.max_tokens:
                if cancelled is not None and cancelled():
                    break
                output = self.model(**model_inputs, **self._keep_last_logits)
                if replying_since is None:
                    replying_since = time.perf_counter()
                logits = output.logits[0, -1].float().to("cpu")
                if self.suppressed:
                    logits[list(self.suppressed)] = float("-inf")
                if processor is not None:
                    logits = processor(torch.tensor([sequence]), logits[None])[0]
                if not bool(torch.isfinite(logits).any()):  # every token masked: nothing may follow
                    finish_reason = "stop"
                    break
                token = _pick(logits, request.temperature, request.top_p, generator)
                if forced is not None:
                    token = forced[completion_tokens]
                completion_tokens += 1
                sequence.append(token)
                if token in self.eos_ids:
                    finish_reason = "stop"
                    break
                reply.push(token)
                current = reply.text
                cut = _find_stop(current, stops, emitted - hold)
                if cut is not None:
                    text, finish_reason = current[:cut], "stop"
                    break
                ready = len(current) - hold if stops else len(current)
                if on_text is not None and ready > emitted:
                    on_text(current[emitted:ready])
                    emitted = ready
                cache = output.get("cache", None)
                if cache is None:
                    cache = output.get("past_key_values", None)
                model_inputs = {
                    "input_ids": torch.tensor([[token]], device=self.device),
                    self._cache_argument: cache,
                    "use_cache": True,
                }
        if text is None:
            text = reply.finish(drop_incomplete=constraint is not None)
            cut = _find_stop(text, stops, emitted - hold)
            if cut is not None:
                text, finish_reason = text[:cut], "stop"
        if on_text is not None and len(text) > emitted:
            on_text(text[emitted:])
        reply_seconds = time.perf_counter() - replying_since if replying_since is not None else 0.0
        return Generation(text, request.prompt_tokens, completion_tokens, finish_reason, reply_seconds)


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Where the first stop string begins in `text` (searching from `start`), or None."""
    found = [index for index in (text.find(s, max(0, start)) for s in stops) if index >= 0]
    return min(found) if found else None


def _pick(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    """Greedy at temperature 0, else nucleus sampling with the request's own generator."""
    import torch

    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        ordered, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(ordered, dim=-1) - ordered >= top_p
        ordered[outside] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    # inverse-CDF draw: deterministic per generator like torch.multinomial, and far cheaper over a large vocabulary
    cumulative = torch.cumsum(probs.double(), dim=-1)
    draw = torch.rand(1, generator=generator, dtype=torch.float64) * cumulative[-1]
    return min(int(torch.searchsorted(cumulative, draw, right=True)), probs.shape[0] - 1)
