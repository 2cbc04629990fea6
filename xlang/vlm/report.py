"""Before/after report of visual instruction tuning: held-aside images, one question per language,
the model's answers before and after stage 2, side by side with the image thumbnails.

Writes `report.md` (a table with thumbnail links), `report.png` (a contact sheet) and `report.json`
(the rows, for tests and dashboards). The PNG needs a font with Hangul and Han glyphs: a system font
when one is installed, else Droid Sans Fallback from Debian's `fonts-droid-fallback` (Apache-2.0,
1.8 MB, pinned), fetched once into the cache.
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.vlm.data import to_messages

REPORT_FONT_URI = (
    "debian://file?deb=pool/main/f/fonts-android/fonts-droid-fallback_6.0.1r16-1.1_all.deb"
    "&sha256=d2096d4edde128fedf6749be2dd204a5810210a6201126d99b8d412344f71056"
    "&path=usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf"
)
REPORT_TASKS: tuple[str, ...] = ("object-centric", "location-centric", "atmosphere-centric", "conversation", "caption")
"""Which record supplies a report question, in order of preference."""


@dataclass
class ReportRow:
    image: str
    image_key: str
    lang: str
    task: str
    question: str
    reference: str
    before: str = ""
    after: str = ""
    before_share: float | None = None
    after_share: float | None = None
    """Share of the answer's characters in the language's own script (when a scorer was given)."""


@dataclass
class ReportFiles:
    markdown: Path
    png: Path | None
    json: Path
    rows: list[ReportRow]


def report_rows(records: Sequence[dict[str, Any]], langs: Sequence[str], *, images: int = 3) -> list[ReportRow]:
    """One question per (image, language) from the records: the first turn of the preferred task type."""
    by_image: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for record in records:
        ref = record.get("image")
        if not isinstance(ref, str) or not ref:
            continue
        by_image.setdefault(ref, {})[(str(record.get("lang")), str(record.get("task")))] = record
    rows: list[ReportRow] = []
    for ref in list(by_image)[:images]:
        for lang in langs:
            record = next((by_image[ref][(lang, t)] for t in REPORT_TASKS if (lang, t) in by_image[ref]), None)
            if record is None:
                continue
            messages = to_messages(record)
            question = next(m["content"] for m in messages if m["role"] == "user").replace("<image>", "").strip()
            reference = next(m["content"] for m in messages if m["role"] == "assistant")
            key = ref.split(":", 1)[-1].rsplit("/", 1)[-1].rsplit(".", 1)[0]
            rows.append(ReportRow(ref, key, lang, str(record.get("task")), question, reference))
    if not rows:
        raise XlangError(f"no held-aside record with an image in language(s) {', '.join(langs)} for the report")
    return rows


def generate_answers(
    model_dir: Path,
    rows: Sequence[ReportRow],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 9,
) -> list[str]:
    """Greedy answers of the LLaVA folder to each row's question about its image (plain transformers).

    Batched with left padding: on a CPU, nine short answers cost little more than one. No repetition
    penalty: it would count the prompt's own tokens, and byte-level Korean or Chinese reuses the same
    lead-byte tokens all the time, so it pushes answers out of the language."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from xlang.vlm.images import load_image

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    model.eval()
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row.question}]}],
                add_generation_prompt=True,
                lang=row.lang,
            )
            for row in chunk
        ]
        images = [load_image(row.image) for row in chunk]
        inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        for sequence in output:
            text = processor.decode(sequence[inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            answers.append(text.strip().rstrip("\ufffd"))  # a cut multi-byte character at the end
    return answers


def before_after_report(
    before_dir: Path,
    after_dir: Path,
    records: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    langs: Sequence[str] = ("en", "ko", "zh"),
    images: int = 3,
    cache_dir: Path | None = None,
    scorers: Mapping[str, Callable[[str], float]] | None = None,
    max_new_tokens: int = 48,
    title: str = "Visual instruction tuning: before and after stage 2",
) -> ReportFiles:
    """Answer held-aside questions with both models and write the report into `out_dir`.

    `scorers`: language code -> share of text in that language's script (e.g. `LanguageSpec.target_share`);
    `cache_dir`: where the report font is fetched when no system font covers CJK.
    """
    rows = report_rows(records, langs, images=images)
    for row, answer in zip(rows, generate_answers(before_dir, rows, max_new_tokens=max_new_tokens), strict=True):
        row.before = answer
    for row, answer in zip(rows, generate_answers(after_dir, rows, max_new_tokens=max_new_tokens), strict=True):
        row.after = answer
    for row in rows:
        scorer = (scorers or {}).get(row.lang)
        if scorer is not None:
            row.before_share = round(float(scorer(row.before)), 3)
            row.after_share = round(float(scorer(row.after)), 3)
    return write_report(rows, out_dir, title=title, cache_dir=cache_dir)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def _cell(text: str) -> str:
    return (text or "∅").replace("|", "\\|").replace("\n", "<br>")


def write_report(
    rows: Sequence[ReportRow], out_dir: Path, *, title: str = "Report", cache_dir: Path | None = None
) -> ReportFiles:
    """Thumbnails, `report.md`, `report.json` and `report.png` for answered rows."""
    from xlang.vlm.images import load_image

    out_dir = Path(out_dir)
    thumbs = out_dir / "thumbnails"
    thumbs.mkdir(parents=True, exist_ok=True)
    for key, ref in {row.image_key: row.image for row in rows}.items():
        target = thumbs / f"{key}.png"
        if not target.is_file():
            image = load_image(ref)
            image.thumbnail((192, 192))
            with tempfile.NamedTemporaryFile(dir=thumbs, suffix=".png", delete=False) as handle:
                image.save(handle, format="PNG")
            os.replace(handle.name, target)
    scored = any(row.after_share is not None for row in rows)
    lines = [f"# {title}", "", "![contact sheet](report.png)", ""]
    header = "| image | lang | question | before | after | reference |"
    rule = "|---|---|---|---|---|---|"
    if scored:
        header = header[:-1] + "| script share before → after |"
        rule += "---|"
    lines += [header, rule]
    for row in rows:
        cells = [
            f"![{row.image_key}](thumbnails/{row.image_key}.png)",
            row.lang,
            _cell(row.question),
            _cell(row.before),
            _cell(row.after),
            _cell(row.reference),
        ]
        if scored:
            cells.append(f"{row.before_share} → {row.after_share}")
        lines.append("| " + " | ".join(cells) + " |")
    markdown = out_dir / "report.md"
    _write_atomic(markdown, "\n".join(lines) + "\n")
    data = out_dir / "report.json"
    _write_atomic(data, json.dumps([asdict(row) for row in rows], ensure_ascii=False, indent=2))
    png = out_dir / "report.png"
    _contact_sheet(rows, thumbs, png, title=title, cache_dir=cache_dir)
    return ReportFiles(markdown=markdown, png=png, json=data, rows=list(rows))


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap(text: str, columns: int) -> list[str]:
    """Wrap by display width (CJK characters count twice), breaking inside words when a line has no spaces."""
    lines: list[str] = []
    for paragraph in (text or "∅").splitlines() or [""]:
        if _width(paragraph) == len(paragraph):
            lines += textwrap.wrap(paragraph, columns) or [""]
            continue
        line = ""
        for char in paragraph:
            if _width(line + char) > columns:
                lines.append(line)
                line = char.lstrip()
            else:
                line += char
        lines.append(line)
    return lines


def cjk_font(cache_dir: Path | None) -> Path | None:
    """A font file with Hangul and Han glyphs: installed, or fetched from Debian into `cache_dir`."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    for path in font_manager.findSystemFonts():
        try:
            charmap = FT2Font(path).get_charmap()
        except (OSError, RuntimeError):  # unreadable or collection formats FT2Font cannot open
            continue
        if all(ord(char) in charmap for char in "한中"):
            return Path(path)
    if cache_dir is None:
        return None
    from xlang.data.debian import fetch_debian_file

    try:
        return fetch_debian_file(REPORT_FONT_URI, Path(cache_dir))
    except XlangError as error:
        print(f"xlang: report.png without CJK glyphs ({error})")
        return None


def _contact_sheet(
    rows: Sequence[ReportRow], thumbs: Path, target: Path, *, title: str, cache_dir: Path | None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib import pyplot as plt
    from PIL import Image

    families = ["DejaVu Sans"]
    font = cjk_font(cache_dir)
    if font is not None:
        font_manager.fontManager.addfont(str(font))
        families.append(font_manager.FontProperties(fname=str(font)).get_name())
    columns = {"question": 34, "before": 44, "after": 44}
    wrapped = [{key: _wrap(getattr(row, key), width) for key, width in columns.items()} for row in rows]
    heights = [max(2.0, 0.2 * max(len(v) for v in cell.values()) + 0.4) for cell in wrapped]
    with plt.rc_context({"font.family": families, "font.size": 9}):
        height = sum(heights) + 0.6
        figure = plt.figure(figsize=(16, height))
        figure.suptitle(title, fontsize=12, x=0.05, ha="left")
        grid = figure.add_gridspec(
            len(rows) + 1,
            4,
            height_ratios=[0.4, *heights],
            width_ratios=[2, 3.4, 4.3, 4.3],
            top=1 - 0.5 / height,
            bottom=0.1 / height,
        )
        for column, label in enumerate(["image", "question", "before stage 2", "after stage 2"]):
            axis = figure.add_subplot(grid[0, column])
            axis.axis("off")
            axis.text(0, 0.2, label, fontsize=11, va="bottom")
        for index, (row, cell) in enumerate(zip(rows, wrapped, strict=True), start=1):
            axis = figure.add_subplot(grid[index, 0])
            axis.imshow(Image.open(thumbs / f"{row.image_key}.png"))
            axis.set_title(f"{row.image_key} [{row.lang}]", fontsize=9)
            axis.axis("off")
            for column, key in enumerate(columns, start=1):
                axis = figure.add_subplot(grid[index, column])
                axis.axis("off")
                text = "\n".join(cell[key])
                share = getattr(row, f"{key}_share", None)
                if share is not None:
                    text += f"\n(script share {share})"
                axis.text(0, 1, text, va="top", ha="left", wrap=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".png", delete=False) as handle:
            figure.savefig(handle, format="png", dpi=80, bbox_inches="tight")
        plt.close(figure)
    os.replace(handle.name, target)
