"""Before/after report of visual instruction tuning: held-aside images, one question per language,
the model's answers before and after stage 2, side by side with the image thumbnails.

Writes `report.md` (a table with thumbnail links), `report.png` (a contact sheet) and `report.json`
(the rows, for tests and dashboards). The PNG needs fonts that draw the run languages' scripts (probed
with `LanguageSpec.sample_chars`, see `report_fonts`): an installed font that draws them all when there is
one; else, per language, an installed font or the language's own `font`, fetched with the `fetch_file`
callable the caller passes (the recipe passes its resolver's). A language that no font draws is named on
stdout and the sheet is drawn anyway.
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xlang.assets.loading import load_pretrained
from xlang.errors import XlangError
from xlang.spec import LanguageSpec
from xlang.vlm.data import IMAGE_PLACEHOLDER, to_messages

EMPTY_ANSWER = "(empty)"
ANSWERS_CAVEAT = (
    "What these answers mean: greedy answers of the model before and after stage 2 to questions it never "
    "trained on. A small model after a short run is not expected to answer correctly: the answers show whether "
    "a reply comes out in the language and about the image at all, not how good the method can be; the run's "
    "bits per character (evaluate section) are its measured figures. `report.json` records, per answer, the "
    "share of its non-space characters in the language's scripts (`before_share`, `after_share`): a check of "
    "the script, not of quality (nonsense in the right script scores 1.0)."
)
ANSWERS_CAVEAT_SHORT = (
    "Greedy answers to held-aside questions; a small model after a short run is not expected to be right."
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
    """Share of the answer's non-space characters in the language's scripts (when a scorer was given): says
    whether a reply is in the script at all, not whether it is any good; kept in report.json, not shown."""


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
            question = next(m["content"] for m in messages if m["role"] == "user")
            question = question.replace(IMAGE_PLACEHOLDER, "").strip()
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
    penalty: it would count the prompt's own tokens, and a byte-level tokenizer reuses the same lead-byte
    tokens all the time in a script it has no merges for, so it pushes answers out of the language."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from xlang.vlm.images import load_image

    processor = load_pretrained(AutoProcessor, model_dir, weights=False)
    processor.tokenizer.padding_side = "left"
    model = load_pretrained(LlavaForConditionalGeneration, model_dir)
    model.eval()
    image_token = getattr(processor, "image_token", None) or IMAGE_PLACEHOLDER
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        # the question as stage 2 trained on it: text content with the image placeholder, rendered with the
        # model's own template (a template from a `chat_template` hook need not know content lists)
        prompts = [
            processor.tokenizer.apply_chat_template(
                [{"role": "user", "content": f"{image_token}\n{row.question}"}],
                chat_template=processor.chat_template,
                tokenize=False,
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
    languages: Sequence[LanguageSpec],
    images: int = 3,
    fetch_file: Callable[[str], Path] | None = None,
    max_new_tokens: int = 48,
    title: str = "Visual instruction tuning: before and after stage 2",
) -> ReportFiles:
    """Answer held-aside questions with both models and write the report into `out_dir`.

    `languages`: the run's languages, in the order of the rows; each answer in a language with scripts
    is scored by `LanguageSpec.target_share`. `fetch_file`: turns a language's `font` URI into a local
    file, for scripts no installed font draws (None: installed fonts only).
    """
    rows = report_rows(records, [spec.code for spec in languages], images=images)
    for row, answer in zip(rows, generate_answers(before_dir, rows, max_new_tokens=max_new_tokens), strict=True):
        row.before = answer
    for row, answer in zip(rows, generate_answers(after_dir, rows, max_new_tokens=max_new_tokens), strict=True):
        row.after = answer
    scorers: dict[str, Callable[[str], float]] = {spec.code: spec.target_share for spec in languages if spec.scripts}
    for row in rows:
        scorer = scorers.get(row.lang)
        if scorer is not None:
            row.before_share = round(float(scorer(row.before)), 3)
            row.after_share = round(float(scorer(row.after)), 3)
    return write_report(rows, out_dir, title=title, fonts=report_fonts(languages, fetch_file))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def _cell(text: str) -> str:
    return (text or EMPTY_ANSWER).replace("|", "\\|").replace("\n", "<br>")


def write_report(
    rows: Sequence[ReportRow], out_dir: Path, *, title: str = "Report", fonts: Sequence[Path] = ()
) -> ReportFiles:
    """Thumbnails, `report.md`, `report.json` and `report.png` for answered rows; `fonts` are font files the
    contact sheet falls back to (in order) for characters its default font lacks (see `report_fonts`)."""
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
    lines = [f"# {title}", "", ANSWERS_CAVEAT, "", "![contact sheet](report.png)", ""]
    lines += ["| image | lang | question | before | after | reference |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [
            f"![{row.image_key}](thumbnails/{row.image_key}.png)",
            row.lang,
            _cell(row.question),
            _cell(row.before),
            _cell(row.after),
            _cell(row.reference),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    markdown = out_dir / "report.md"
    _write_atomic(markdown, "\n".join(lines) + "\n")
    data = out_dir / "report.json"
    _write_atomic(data, json.dumps([asdict(row) for row in rows], ensure_ascii=False, indent=2))
    png = out_dir / "report.png"
    _contact_sheet(rows, thumbs, png, title=title, fonts=fonts)
    return ReportFiles(markdown=markdown, png=png, json=data, rows=list(rows))


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap(text: str, columns: int) -> list[str]:
    """Wrap by display width (wide characters count twice), breaking inside words when a line has no spaces."""
    lines: list[str] = []
    for paragraph in (text or EMPTY_ANSWER).splitlines() or [""]:
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


def font_characters(path: Path) -> frozenset[int] | None:
    """The code points a font file maps, or None when FreeType cannot open it (collections, damaged files)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(str(path)).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return None


def _installed_fonts() -> list[tuple[Path, frozenset[int]]]:
    from matplotlib import font_manager

    found = []
    for path in sorted(font_manager.findSystemFonts()):
        characters = font_characters(Path(path))
        if characters is not None:
            found.append((Path(path), characters))
    return found


@dataclass(frozen=True)
class LanguageNeeds:
    """What a font must draw for a language: the letter of its first (main) script, and preferably one letter of
    each further script (`LanguageSpec.sample_chars`)."""

    spec: LanguageSpec
    main: int
    letters: frozenset[int]

    @classmethod
    def of(cls, spec: LanguageSpec) -> LanguageNeeds | None:
        sample = spec.sample_chars()
        return cls(spec, ord(sample[0]), frozenset(map(ord, sample))) if sample else None


def _best_font(fonts: Sequence[tuple[Path, frozenset[int]]], needs: Sequence[LanguageNeeds]) -> Path | None:
    """The font that draws the main letter of every language in `needs` and the most of their other letters."""
    ranked = [
        (sum(len(need.letters & characters) for need in needs), index, path)
        for index, (path, characters) in enumerate(fonts)
        if all(need.main in characters for need in needs)
    ]
    return max(ranked, key=lambda item: (item[0], -item[1]))[2] if ranked else None


def report_fonts(languages: Sequence[LanguageSpec], fetch_file: Callable[[str], Path] | None = None) -> list[Path]:
    """Font files that together draw the scripts of `languages`, for the contact sheet.

    A font serves a language when it draws the letter of the language's first script (`sample_chars()[0]`),
    since further ranges are often rare extensions (archaic letters, supplementary ideographs) that few
    fonts carry; among fonts that serve, the one drawing the most `sample_chars` wins. One installed font
    that serves every language is used alone. Otherwise each language that no chosen font serves gets an
    installed font that does, else its own `font`, fetched with `fetch_file`. A language left without one
    is named on stdout (its letters then show as empty boxes); the report never fails over a font.
    """
    needs = [need for need in map(LanguageNeeds.of, languages) if need is not None]
    if not needs:
        return []
    installed = _installed_fonts()
    alone = _best_font(installed, needs)
    if alone is not None:
        return [alone]
    chosen: list[tuple[Path, frozenset[int]]] = []
    for need in needs:
        spec = need.spec
        if any(need.main in characters for _, characters in chosen):
            continue
        found = _best_font(installed, [need])
        if found is not None:
            chosen.append((found, font_characters(found) or frozenset()))
            continue
        if not spec.font:
            problem = "the language names no font"
        elif fetch_file is None:
            problem = f"no fetcher was given for its font {spec.font}"
        else:
            try:
                path = Path(fetch_file(spec.font))
            except XlangError as error:
                problem = f"its font {spec.font} could not be fetched ({error})"
            else:
                characters = font_characters(path) or frozenset()
                if need.main in characters:
                    chosen.append((path, characters))
                    continue
                problem = f"its font {spec.font} does not draw it either"
        letter = chr(need.main)
        print(f"xlang: report.png may not draw {spec.name} ({letter}): no installed font draws it and {problem}")
    return [path for path, _ in chosen]


def _contact_sheet(rows: Sequence[ReportRow], thumbs: Path, target: Path, *, title: str, fonts: Sequence[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib import pyplot as plt
    from PIL import Image

    families = ["DejaVu Sans"]
    for font in fonts:  # matplotlib falls back along the family list, glyph by glyph
        font_manager.fontManager.addfont(str(font))
        name = font_manager.FontProperties(fname=str(font)).get_name()
        if name not in families:
            families.append(name)
    columns = {"question": 34, "before": 44, "after": 44}
    wrapped = [{key: _wrap(getattr(row, key), width) for key, width in columns.items()} for row in rows]
    heights = [max(2.0, 0.2 * max(len(v) for v in cell.values()) + 0.4) for cell in wrapped]
    with plt.rc_context({"font.family": families, "font.size": 9}):
        height = sum(heights) + 0.9
        figure = plt.figure(figsize=(16, height))
        figure.suptitle(f"{title}\n{ANSWERS_CAVEAT_SHORT}", fontsize=12, x=0.05, ha="left")
        grid = figure.add_gridspec(
            len(rows) + 1,
            4,
            height_ratios=[0.4, *heights],
            width_ratios=[2, 3.4, 4.3, 4.3],
            top=1 - 0.8 / height,
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
                axis.text(0, 1, text, va="top", ha="left", wrap=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".png", delete=False) as handle:
            figure.savefig(handle, format="png", dpi=80, bbox_inches="tight")
        plt.close(figure)
    os.replace(handle.name, target)
