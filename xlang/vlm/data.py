"""Visual-instruction records: LLaVA-format JSONL files (and hub datasets in that format), and their checks.

A record is LLaVA's conversation format plus X-LLaVA's fields:
`{"id", "image", "lang", "task", "conversations": [{"from": "human"|"gpt"|"system", "value"}...]}`
(`split: heldout` marks records kept aside for the report). The first human turn carries one `<image>`.
The data of a language ships with its plugin (`LanguageSpec.vit_data`); nothing here knows a language.

Bad input policy (documented in docs/vision.md): a row that is not a JSON object with `id` and
`conversations` stops the load with the file and line, since the file itself is broken; a sample that is
well-formed but unusable (missing or corrupt image, no assistant turn, a wrong number of image
placeholders, an image-token count that does not match the tower) is reported with its file and id
and skipped, and the stage stops only when no usable sample is left. Checks run before training
starts, so nothing is written for a run that stops.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from xlang.errors import XlangError
from xlang.vlm.images import BUILTIN_SCHEMES

HELDOUT = "heldout"
"""The `split` of records kept out of training (the report asks their questions)."""
IMAGE_PLACEHOLDER = "<image>"
ROLES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
"""LLaVA's speaker names (and the chat roles some datasets use instead) to chat-template roles."""


@dataclass(frozen=True)
class SkippedSample:
    """A sample left out of training, and why; written to the stage's `skipped.jsonl`."""

    source: str
    id: str
    reason: str

    def line(self) -> str:
        return f"{self.source} [{self.id}]: {self.reason}"


def read_vit_jsonl(path: Path, *, source: str | None = None) -> list[dict[str, Any]]:
    """Records of a LLaVA-format JSONL file, image paths made absolute against the file's folder.

    Every record gets `source` (the file) for error reports. A malformed row raises XlangError with
    the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise XlangError(f"visual-instruction file {path} does not exist")
    label = source or str(path)
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise XlangError(f"{path}:{number} is not valid JSON ({error.msg}); fix or remove that line") from None
            if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("conversations"), list):
                raise XlangError(
                    f"{path}:{number} is not a LLaVA record (needs an object with 'id' and a 'conversations' list)"
                )
            image = record.get("image")
            if isinstance(image, str) and image and image.partition(":")[0] not in BUILTIN_SCHEMES:
                if not os.path.isabs(image):
                    record["image"] = str((path.parent / image).resolve())
            record["id"] = str(record["id"])
            record.setdefault("source", label)
            records.append(record)
    return records


def split_heldout(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, held-aside records): a record is held aside when its `split` is `heldout`."""
    train = [record for record in records if record.get("split") != HELDOUT]
    heldout = [record for record in records if record.get("split") == HELDOUT]
    return train, heldout


def load_vit_uri(uri: str, cache_dir: Path | None = None) -> list[dict[str, Any]] | Any | None:
    """Records for `file://PATH.jsonl` and `hf://OWNER/NAME[?split=train&config=...]` (a hub dataset in the
    same format); None for other schemes, so that a plugin can claim them."""
    parsed = urlparse(uri)
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    if parsed.scheme == "file":
        return read_vit_jsonl(Path(unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "hf":
        from datasets import load_dataset

        name = (parsed.netloc + parsed.path).strip("/")
        try:
            dataset = load_dataset(
                name,
                query.get("config"),
                split=query.get("split", "train"),
                cache_dir=str(Path(cache_dir) / "datasets") if cache_dir else None,
            )
        except Exception as error:  # offline, unknown name, no access: all say the same to the user
            raise XlangError(f"cannot load hub dataset {name!r} ({error}); check the name and the network") from error
        return [{**row, "id": str(row.get("id", index)), "source": uri} for index, row in enumerate(dataset)]
    return None


def check_record(record: dict[str, Any]) -> str | None:
    """Why a record cannot train (None when it can): known speakers, alternating turns, an assistant turn.

    Image placeholders are checked after tokenization, against the tower's token count."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "no conversation turns"
    roles = []
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            return "a conversation turn is not an object with a string 'value'"
        role = ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            return f"unknown speaker {turn.get('from')!r} (expected one of {', '.join(ROLES)})"
        roles.append(role)
    if "assistant" not in roles:
        return "no assistant turn: nothing to learn from"
    body = [role for role in roles if role != "system"]
    if body[0] != "user" or any(a == b for a, b in zip(body, body[1:], strict=False)):
        return "turns do not alternate user/assistant starting with the user"
    return None


def to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages of a record; an image without a placeholder gets one in front of the first user turn
    (LLaVA's own convention)."""
    messages = [
        {"role": ROLES[str(turn["from"]).lower()], "content": turn["value"]} for turn in record["conversations"]
    ]
    if record.get("image") not in (None, "") and not any(IMAGE_PLACEHOLDER in m["content"] for m in messages):
        first = next(m for m in messages if m["role"] == "user")
        first["content"] = f"{IMAGE_PLACEHOLDER}\n{first['content']}"
    return messages


def write_skipped(skipped: Iterable[SkippedSample], path: Path) -> None:
    """The skipped-sample report as JSONL, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as handle:
        for sample in skipped:
            handle.write(json.dumps(asdict(sample), ensure_ascii=False) + "\n")
    os.replace(handle.name, path)
