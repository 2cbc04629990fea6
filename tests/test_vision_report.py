"""The report's fonts come from the languages: an installed font that draws every run language's sample
letters, else each language's own `font`, fetched through `fetch_file`.

A real TrueType font is built here (fontTools) for Medefaidrin, a script no installed font draws, so the
fetch path is taken on any machine; it reaches the contact sheet through the built-in `file://` fetch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from xlang.spec import ChatBits, LanguageSpec, ScriptRange

MEDEFAIDRIN = range(0x16E40, 0x16E44)
"""Four capital letters of a script that ships in no common font."""


def write_font(path: Path, code_points: range) -> Path:
    """A minimal TrueType font with a box glyph for each code point (and a space)."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def box() -> object:
        pen = TTGlyphPen(None)
        pen.moveTo((50, 0))
        pen.lineTo((50, 700))
        pen.lineTo((500, 700))
        pen.lineTo((500, 0))
        pen.closePath()
        return pen.glyph()

    glyphs = {f"u{point:X}": point for point in code_points}
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder([".notdef", "space", *glyphs])
    builder.setupCharacterMap({0x20: "space", **{point: name for name, point in glyphs.items()}})
    builder.setupGlyf({".notdef": box(), "space": TTGlyphPen(None).glyph(), **{name: box() for name in glyphs}})
    builder.setupHorizontalMetrics({name: (600, 50) for name in [".notdef", "space", *glyphs]})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "Xlang Test Script", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    path.parent.mkdir(parents=True, exist_ok=True)
    builder.save(str(path))
    return path


def language(font: str | None, code: str = "qaa", scripts: bool = True) -> LanguageSpec:
    return LanguageSpec(
        code=code,
        name="Medefaidrin" if scripts else "Plain Latin",
        scripts=(ScriptRange(name="Medefaidrin", start=0x16E40, end=0x16E9F),) if scripts else (),
        chat=ChatBits(system_prompt="Answer."),
        font=font,
    )


@pytest.fixture
def fetch_file(test_cache_dir: Path) -> object:
    """The real resolver's fetch (built-in `file://`), recording what it was asked for."""
    from xlang import plugins
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    resolver = Resolver(XlangSettings(cache_dir=test_cache_dir), plugins.make_plugin_manager())
    asked: list[str] = []

    def fetch(uri: str) -> Path:
        asked.append(uri)
        return resolver.fetch_file(uri)

    fetch.asked = asked  # type: ignore[attr-defined]
    return fetch


def test_report_fonts_fetch_the_language_font_when_no_installed_font_draws_it(
    tmp_path: Path, fetch_file: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from matplotlib import font_manager

    from xlang.vlm.report import report_fonts

    font = write_font(tmp_path / "fonts" / "medefaidrin.ttf", MEDEFAIDRIN)
    latin = language(font="file:///nowhere/never-fetched.ttf", code="qab", scripts=False)
    assert report_fonts([latin], fetch_file) == []  # no script beyond the default font's: nothing fetched
    assert fetch_file.asked == []  # type: ignore[attr-defined]

    assert report_fonts([latin, language(font=f"file://{font}")], fetch_file) == [font]
    assert fetch_file.asked == [f"file://{font}"]  # type: ignore[attr-defined]

    # without a fetcher, a font that does not draw the script, or a font that cannot be fetched: the report
    # goes on and names the language
    dejavu = Path(font_manager.findfont("DejaVu Sans"))
    for spec, fetch, why in (
        (language(font=f"file://{font}"), None, "no fetcher was given for its font"),
        (language(font=f"file://{dejavu}"), fetch_file, "does not draw it either"),
        (language(font=f"file://{tmp_path / 'missing.ttf'}"), fetch_file, "could not be fetched"),
        (language(font=None), fetch_file, "the language names no font"),
    ):
        assert report_fonts([spec], fetch) == []
        printed = capsys.readouterr().out
        assert "report.png may not draw Medefaidrin" in printed and why in printed, printed


def test_contact_sheet_draws_the_fetched_script(tmp_path: Path) -> None:
    from xlang.vlm.report import ReportRow, write_report

    font = write_font(tmp_path / "fonts" / "medefaidrin.ttf", MEDEFAIDRIN)
    text = "".join(map(chr, MEDEFAIDRIN))
    rows = [ReportRow("skimage:astronaut", "astronaut", "qaa", "caption", text, text, before=text, after=text)]

    def missing_glyphs(fonts: list[Path]) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            files = write_report(rows, tmp_path / f"report-{len(fonts)}", fonts=fonts)
        assert files.png.is_file() and files.png.stat().st_size > 1000
        return [str(w.message) for w in caught if "missing from font" in str(w.message)]

    assert missing_glyphs([]) != []  # the default font alone cannot draw the script
    assert missing_glyphs([font]) == []
