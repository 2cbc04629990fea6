"""Corpora: Debian packages fetched, verified and extracted; splits; the load_corpus hook; bad input.

Two kinds of packages: small handmade `.deb` files served by a local HTTP server (the fetch, verify,
extract and split path without the network), and the real pinned Debian packages of the language
plugins, downloaded once into the session cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xlang import plugins
from xlang.builtin import corpus_sources
from xlang.data import build as corpus_build
from xlang.data import corpus_stats, split_stats, texts
from xlang.data.build import build_debian_corpus, parse_debian_uri, read_meta
from xlang.data.debian import fetch_debian_file
from xlang.data.extract import help_paragraphs, man_paragraphs, troff_text
from xlang.data.sources import hub_view
from xlang.errors import XlangError
from xlang.spec import CorpusSource, LanguageSpec

# --- handmade packages ------------------------------------------------------------------------------


def _xz_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_deb(files: dict[str, bytes]) -> bytes:
    """A Debian binary package as dpkg writes it: ar archive of debian-binary, control and data tars."""
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", _xz_tar({"control": b"Package: xlang-test\n"})),
        ("data.tar.xz", _xz_tar(files)),
    ]
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def help_page(language: str, paragraphs: list[tuple[str, str]]) -> bytes:
    body = "\n".join(f'<p id="{pid}" class="paragraph" dir="auto">{text}</p>' for pid, text in paragraphs)
    return (
        f'<!DOCTYPE html>\n<html lang="{language}"><head><title>t</title><script>var x = "<p id=\\"no\\">";</script>'
        f'</head><body><header id="TopLeftHeader"><p dir="auto">LibreOffice Help</p></header>'
        f'<div id="DisplayArea">{body}</div></body></html>'
    ).encode()


def _help_files(language: str, translate: bool) -> dict[str, bytes]:
    """Twelve help pages; the Korean package leaves some paragraphs in English, as the real one does."""
    files = {}
    for page in range(12):
        paragraphs = []
        for number in range(4):
            english = f"Page {page} paragraph {number} explains the Format menu &amp; its dialog."
            korean = f"{page}쪽 {number}번째 문단은 서식 메뉴 &amp; 대화 상자를 설명합니다."
            paragraphs.append((f"par_id{page}{number}", korean if translate and number != 3 else english))
        paragraphs.append(("bm_id1", ""))
        switch = (
            '<span id="swlnsys1" class="switchinline"><span hidden="true" id="MACtext1" class="MAC">Command</span>'
            '<span hidden="true" id="defaulttext1">Ctrl</span></span>'
        )
        paragraphs.append(("par_key", f"{'단축키' if translate else 'Shortcut'} {switch}+F"))
        files[f"usr/share/libreoffice/help/{language}/text/shared/page{page:02}.html"] = help_page(language, paragraphs)
    return files


MAN_PAGE = rb""".\" comment line
.de XX
.B macro body is not text
..
.TH LS 1 "2022" "GNU coreutils" "User Commands"
.SH NAME
ls \- \fB\(lq\fP\fI\,list\/\fP\(rq \[u4E2D]
.SH DESCRIPTION
.PP
\fBls\fP lists
files\ and folders.
.TP
\fB\-a\fP, \fB\-\-all\fP
do not ignore entries starting with .
.if n .ig
.BR ls (1)
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A local Debian mirror on 127.0.0.1 holding handmade help and man-page packages."""
    root = tmp_path_factory.mktemp("mirror")
    packages = {
        "ko": make_deb(_help_files("ko", translate=True)),
        "en": make_deb(_help_files("en-US", translate=False)),
        "man": make_deb(
            {
                "usr/share/man/xx/man1/ls.1.gz": gzip.compress(MAN_PAGE, mtime=0),
                "usr/share/man/xx/man5/motd.5": b".SH NAME\nmotd \\- message of the day\n",
                "usr/share/man/yy/man1/ls.1.gz": gzip.compress(b"other language\n", mtime=0),
            }
        ),
    }
    paths = {
        "ko": "pool/main/x/xlang-test/xlang-help-ko_1.0-1%2Btest1_all.deb",
        "en": "pool/main/x/xlang-test/xlang-help-en-us_1.0-1_all.deb",
        "man": "pool/main/x/xlang-test/xlang-man-xx_1.0-1_all.deb",
    }
    for key, pool in paths.items():
        target = root / "debian" / pool.replace("%2B", "+")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(packages[key])
    (root / "debian" / "current").mkdir()
    (root / "debian" / "current" / "xlang-help-ko_2.0-1_all.deb").write_bytes(packages["ko"])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "mirror": f"http://127.0.0.1:{server.server_address[1]}/debian",
            "paths": paths,
            "sha256": {key: hashlib.sha256(data).hexdigest() for key, data in packages.items()},
        }
    finally:
        server.shutdown()
        server.server_close()


def _uri(archive: dict, key: str, extractor: str = "libreoffice-help", **options: str) -> str:
    query = f"deb={archive['paths'][key]}&sha256={archive['sha256'][key]}"
    extra = "".join(f"&{name}={value}" for name, value in options.items())
    return f"debian://{extractor}?{query}{extra}"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_handmade_package_is_fetched_verified_extracted_and_split(archive, tmp_path):
    uri = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="500")
    folder = build_debian_corpus("help-ko", uri, tmp_path, mirror=archive["mirror"], resolve=None)
    train, validation = _lines(folder / "train.jsonl"), _lines(folder / "validation.jsonl")
    records = train + validation
    assert train and validation
    assert {r["doc"] for r in train}.isdisjoint({r["doc"] for r in validation})
    assert all("서식 메뉴 & 대화 상자" in r["text"] or r["text"] == "단축키 Ctrl+F" for r in records)
    assert "단축키 Ctrl+F" in {r["text"] for r in records}  # the Mac variant is hidden, the default kept
    assert not any("Page" in r["text"] for r in records)  # untranslated English fallback dropped
    meta = read_meta(folder)
    (package,) = meta["packages"]
    assert package["sha256"] == archive["sha256"]["ko"] and package["pinned"] is True
    assert package["version"] == "1.0-1+test1"
    assert meta["dropped"]["untranslated"] == 12 and meta["dropped"]["tiny"] == 12
    assert meta["splits"]["train"]["records"] == len(train)
    assert meta["splits"]["validation"]["target_chars"] > 0
    assert (tmp_path / "downloads" / "xlang-help-ko_1.0-1+test1_all.deb").is_file()


def test_build_is_deterministic_and_cached(archive, tmp_path):
    uri = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="500")
    first = build_debian_corpus("help-ko", uri, tmp_path / "a", mirror=archive["mirror"], resolve=None)
    second = build_debian_corpus("help-ko", uri, tmp_path / "b", mirror=archive["mirror"], resolve=None)
    for split in ("train", "validation"):
        assert (first / f"{split}.jsonl").read_bytes() == (second / f"{split}.jsonl").read_bytes()
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert build_debian_corpus("help-ko", uri, tmp_path / "a", mirror=archive["mirror"]) == first
    assert (first / "meta.json").stat().st_mtime_ns == stamp  # served from the cache, not rebuilt


def test_changed_uri_rebuilds_in_place(archive, tmp_path):
    narrow = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="500")
    wide = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="900")
    build_debian_corpus("help-ko", narrow, tmp_path, mirror=archive["mirror"])
    folder = build_debian_corpus("help-ko", wide, tmp_path, mirror=archive["mirror"])
    assert read_meta(folder)["uri"] == wide
    assert sorted(p.name for p in (tmp_path / "corpora").iterdir()) == ["help-ko"]


def test_parallel_pairs_share_page_and_id(archive, tmp_path):
    uri = (
        f"debian://libreoffice-help-parallel?deb={archive['paths']['en']}&sha256={archive['sha256']['en']}"
        f"&deb={archive['paths']['ko']}&sha256={archive['sha256']['ko']}&require=hangul&max_share=0.5&validation_chars=900"
    )
    folder = build_debian_corpus("help-en-ko", uri, tmp_path, fields=("en", "ko"), mirror=archive["mirror"])
    pairs = _lines(folder / "train.jsonl") + _lines(folder / "validation.jsonl")
    # three translated paragraphs and the shortcut per page; a validation pair is removed from train
    assert len({(pair["en"], pair["ko"]) for pair in pairs}) == 12 * 3 + 1
    for pair in pairs:
        assert set(pair) == {"en", "ko", "doc"}
        if pair["en"].startswith("Page"):
            page, number = pair["en"].split()[1], pair["en"].split()[3]
            assert pair["ko"].startswith(f"{page}쪽 {number}번째")
    assert {"en": "Shortcut Ctrl+F", "ko": "단축키 Ctrl+F"} in [{k: p[k] for k in ("en", "ko")} for p in pairs]


def test_man_pages_become_paragraphs(archive, tmp_path):
    uri = _uri(archive, "man", extractor="manpages", manpath="xx", validation_chars="10")
    folder = build_debian_corpus("man-xx", uri, tmp_path, mirror=archive["mirror"])
    validation = _lines(folder / "validation.jsonl")
    assert {r["doc"] for r in validation} == {"man5/motd.5"}  # the smallest page when none fits the budget
    paragraphs = [r["text"] for r in _lines(folder / "train.jsonl") + validation]
    assert "motd - message of the day" in paragraphs and "other language" not in paragraphs
    assert "ls - “list” 中" in paragraphs
    assert "ls lists files and folders." in paragraphs
    assert "-a, --all do not ignore entries starting with . ls(1)" in paragraphs
    assert not any("macro body" in text or "comment" in text for text in paragraphs)


def test_one_file_out_of_a_package(archive, tmp_path):
    uri = _uri(archive, "man", extractor="file", path="usr/share/man/xx/man5/motd.5")
    path = fetch_debian_file(uri, tmp_path, mirror=archive["mirror"])
    assert path.read_bytes().startswith(b".SH NAME")
    assert fetch_debian_file(uri, tmp_path, mirror="http://127.0.0.1:9") == path  # cached: no network
    with pytest.raises(XlangError, match="has no regular file usr/share/nothing"):
        fetch_debian_file(uri.replace("man/xx/man5/motd.5", "nothing"), tmp_path, mirror=archive["mirror"])
    with pytest.raises(XlangError, match="not a debian://file"):
        fetch_debian_file(uri.replace("usr/share/man/xx/man5/motd.5", "../../etc/passwd"), tmp_path)


def test_checksum_mismatch_leaves_nothing(archive, tmp_path):
    uri = _uri(archive, "ko").replace(archive["sha256"]["ko"], "0" * 64)
    with pytest.raises(XlangError, match="checksum mismatch .* expected sha256 0{64}"):
        build_debian_corpus("help-ko", uri, tmp_path, mirror=archive["mirror"], resolve=None)
    assert not (tmp_path / "corpora").exists()
    assert list((tmp_path / "downloads").iterdir()) == []


def test_gone_package_without_apt_says_what_to_do(archive, tmp_path):
    uri = _uri(archive, "ko").replace("1.0-1%2Btest1", "0.9-1")
    with pytest.raises(XlangError, match=r"is gone from the archive \(404\).*apt-get update.*snapshot"):
        build_debian_corpus("help-ko", uri, tmp_path, mirror=archive["mirror"], resolve=lambda package: None)
    assert not (tmp_path / "corpora").exists()


def test_gone_package_falls_back_to_the_current_version(archive, tmp_path):
    uri = _uri(archive, "ko", require="hangul", max_share="0.5").replace("1.0-1%2Btest1", "0.9-1")
    asked = []

    def resolve(package: str) -> tuple[str, str, str]:
        asked.append(package)
        return (
            f"{archive['mirror']}/current/xlang-help-ko_2.0-1_all.deb",
            "xlang-help-ko_2.0-1_all.deb",
            archive["sha256"]["ko"],
        )

    with pytest.warns(UserWarning, match="left the Debian archive"):
        folder = build_debian_corpus("help-ko", uri, tmp_path, mirror=archive["mirror"], resolve=resolve)
    assert asked == ["xlang-help-ko"]
    (package,) = read_meta(folder)["packages"]
    assert package["pinned"] is False and package["version"] == "2.0-1"


def test_unreachable_archive_is_one_clear_error(tmp_path):
    uri = "debian://libreoffice-help?deb=pool/main/x/x/x_1_all.deb&sha256=" + "a" * 64
    with pytest.raises(XlangError, match="cannot reach the Debian archive at http://127.0.0.1:9.*XLANG_DEBIAN_MIRROR"):
        build_debian_corpus("x", uri, tmp_path, mirror="http://127.0.0.1:9/debian")
    assert not (tmp_path / "corpora").exists()


def test_empty_extraction_is_refused(archive, tmp_path):
    uri = _uri(archive, "en", require="hangul")
    with pytest.raises(XlangError, match="empty after extraction .* without the required script HANGUL"):
        build_debian_corpus("help-en", uri, tmp_path, mirror=archive["mirror"])
    assert not (tmp_path / "corpora").exists()


def test_interrupted_build_leaves_no_corpus(archive, tmp_path, monkeypatch):
    uri = _uri(archive, "ko", require="hangul", max_share="0.5")
    real_write = corpus_build._write_jsonl

    def write_then_die(path: Path, records: list) -> None:
        real_write(path, records)
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_build, "_write_jsonl", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_debian_corpus("help-ko", uri, tmp_path, mirror=archive["mirror"])
    assert list((tmp_path / "corpora").iterdir()) == []


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("debian://nonsense?deb=a.deb&sha256=" + "a" * 64, "unknown extractor 'nonsense'"),
        ("debian://libreoffice-help?deb=a.deb", "found 1 deb and 0 sha256"),
        ("debian://libreoffice-help?deb=a.deb&sha256=xyz", "not 64 hex digits"),
        ("debian://libreoffice-help?deb=a.deb&sha256=" + "a" * 64 + "&colour=red", "unknown option"),
        ("debian://manpages?deb=a.deb&sha256=" + "a" * 64, "needs manpath="),
    ],
)
def test_bad_debian_uris_are_named(uri, message):
    with pytest.raises(XlangError, match=message):
        parse_debian_uri(uri)


# --- the hook, file:// and hf:// -------------------------------------------------------------------


def _source(uri: str, name: str = "local", parallel: tuple[str, str] | None = None) -> CorpusSource:
    return CorpusSource(name=name, uri=uri, parallel=parallel)


def test_hook_passes_on_other_schemes(tmp_path):
    pm = plugins.make_plugin_manager(load_entry_points=False)
    assert (
        plugins.call_first("load_corpus", pm, source=_source("s3://bucket/x.txt"), split="train", cache_dir=tmp_path)
        is None
    )
    assert corpus_sources.load_corpus(source="ftp://x/y", split="train", cache_dir=tmp_path) is None


def test_file_txt_paragraphs_split_disjointly(tmp_path):
    paragraphs = [f"문단 {i}: 한국어 문장이 여기에 있습니다. " * 3 for i in range(200)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    loaded = {
        split: corpus_sources.load_corpus(source=_source(corpus.as_uri()), split=split, cache_dir=tmp_path)
        for split in ("train", "validation")
    }
    train, validation = texts(loaded["train"]), texts(loaded["validation"])
    assert validation and set(train).isdisjoint(validation)
    assert sorted(train + validation) == sorted(p.strip() for p in paragraphs)
    again = corpus_sources.load_corpus(source=_source(corpus.as_uri()), split="validation", cache_dir=tmp_path)
    assert texts(again) == validation


def test_file_jsonl_and_its_errors(tmp_path, monkeypatch):
    corpus = tmp_path / "data" / "c.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"body": f"line {i} " * 20}) + "\n" for i in range(100)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    dataset = corpus_sources.load_corpus(
        source=_source("file://data/c.jsonl?field=body"), split="train", cache_dir=tmp_path
    )
    assert dataset.num_rows > 90 and dataset.column_names == ["text", "doc"]
    with pytest.raises(XlangError, match=r"c.jsonl:1 has no string field 'text'"):
        corpus_sources.load_corpus(source=_source("file://data/c.jsonl"), split="train", cache_dir=tmp_path)
    corpus.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(XlangError, match=r"c.jsonl:2 is not valid JSON"):
        corpus_sources.load_corpus(source=_source(corpus.as_uri()), split="train", cache_dir=tmp_path)
    with pytest.raises(XlangError, match="does not exist"):
        corpus_sources.load_corpus(source=_source("file:///nowhere/corpus.txt"), split="train", cache_dir=tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(XlangError, match="holds no text"):
        corpus_sources.load_corpus(source=_source((tmp_path / "empty.txt").as_uri()), split="train", cache_dir=tmp_path)
    with pytest.raises(XlangError, match="unknown split 'test'"):
        corpus_sources.load_corpus(source=_source(corpus.as_uri()), split="test", cache_dir=tmp_path)


def test_hub_without_the_hub_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    source = _source("hf://wikimedia/wikipedia?config=20231101.ko&field=text", "wikipedia-ko")
    with pytest.raises(XlangError, match=r"cannot stream hf://wikimedia/wikipedia.*unreachable.*offline corpora"):
        corpus_sources.load_corpus(source=source, split="train", cache_dir=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(XlangError, match="offline mode is on"):
        corpus_sources.load_corpus(source=source, split="validation", cache_dir=tmp_path)


def test_hub_view_holds_out_the_first_records():
    import datasets

    stream = datasets.Dataset.from_dict({"id": list(range(50)), "body": [f"doc {i}" for i in range(50)]})
    stream = stream.to_iterable_dataset()
    validation = hub_view(stream, "validation", "body", 10)
    train = hub_view(stream, "train", "body", 10)
    assert [r["text"] for r in validation] == [f"doc {i}" for i in range(10)]
    assert [r["text"] for r in train] == [f"doc {i}" for i in range(10, 50)]
    assert texts(train, limit=3) == ["doc 10", "doc 11", "doc 12"]
    with pytest.raises(XlangError, match="pass limit="):
        texts(train)
    with pytest.raises(XlangError, match="no field 'text'"):
        hub_view(stream, "train", "text", 10)


# --- extraction units ----------------------------------------------------------------------------


def test_help_paragraphs_keep_default_variants_and_entities():
    page = help_page(
        "ko", [("par_1", "A&nbsp;&lt;b&gt; <br/>c"), ("hd_2", '<span hidden="true" id="WRITERx">W</span>x')]
    )
    assert help_paragraphs(page.decode()) == [("par_1", "A <b> c"), ("hd_2", "x")]


def test_troff_escapes_and_cjk_line_joining():
    assert troff_text(r"\fB\-\-all\fR \(em \*(lqquoted\*(rq \e \s-1small\s0") == "--all — “quoted” \\ small"
    assert man_paragraphs("第一行\n第二行\nand English\n") == ["第一行第二行 and English"]


def test_split_stats_count_target_characters(tmp_path):
    spec = LanguageSpec.model_validate(
        {
            "code": "ko",
            "name": "Korean",
            "scripts": [{"name": "Hangul", "start": 0xAC00, "end": 0xD7A3}],
            "prompts": {t: "p" for t in ("object-centric", "location-centric", "atmosphere-centric", "conversation")},
            "chat": {"system_prompt": "s", "answer_in_language": "a"},
        }
    )
    stats = split_stats(spec, ["한국어 ab", "가나"])
    assert (stats.records, stats.documents, stats.chars, stats.visible_chars, stats.target_chars) == (2, 2, 8, 7, 5)
    assert stats.target_share == pytest.approx(5 / 7)


# --- the real Debian packages ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_corpora(test_cache_dir: Path) -> dict[str, dict[str, dict[str, object]]]:
    """Every offline corpus of ko, zh and en through the hook, from the pinned Debian packages."""
    pm = plugins.make_plugin_manager()
    loaded: dict[str, dict[str, dict[str, object]]] = {}
    for code in ("ko", "zh", "en"):
        spec = plugins.get_language(code, pm)
        loaded[code] = {
            source.name: {
                split: plugins.call_first("load_corpus", pm, source=source, split=split, cache_dir=test_cache_dir)
                for split in ("train", "validation")
            }
            for source in spec.corpora
            if source.kind == "offline"
        }
    return loaded


@pytest.mark.slow
@pytest.mark.parametrize(("code", "minimum"), [("ko", 500_000), ("zh", 500_000)])
def test_real_corpora_are_big_enough(real_corpora, code, minimum):
    spec = plugins.get_language(code)
    mono = {
        name: splits for name, splits in real_corpora[code].items() if name in {s.name for s in spec.offline_corpora()}
    }
    stats = corpus_stats(spec, mono).splits
    assert stats["train"].target_chars + stats["validation"].target_chars >= minimum
    assert stats["train"].target_share > 0.5
    assert 20_000 <= stats["validation"].target_chars and stats["validation"].chars <= 65_000


@pytest.mark.slow
def test_real_english_corpus(real_corpora):
    spec = plugins.get_language("en")
    stats = corpus_stats(spec, real_corpora["en"]).splits
    assert stats["train"].chars > 3_000_000 and stats["validation"].chars <= 65_000
    assert stats["train"].target_chars == 0


@pytest.mark.slow
def test_real_splits_are_disjoint(real_corpora):
    for code, sources in real_corpora.items():
        for name, splits in sources.items():
            train, validation = splits["train"], splits["validation"]
            assert set(train["doc"]).isdisjoint(validation["doc"]), name
            field = "text" if "text" in train.column_names else code
            assert set(train[field]).isdisjoint(validation[field]), name


@pytest.mark.slow
@pytest.mark.parametrize("code", ["ko", "zh"])
def test_real_parallel_pairs(real_corpora, code):
    spec = plugins.get_language(code)
    (source,) = spec.parallel_corpora()
    train = real_corpora[code][source.name]["train"]
    assert train.num_rows > 15_000
    for pair in train.select(range(0, train.num_rows, 97)):
        assert pair["en"] and pair[code] and pair["en"] != pair[code]
        assert spec.has_target_text(pair[code]) and not any("\uac00" <= c <= "\ud7a3" for c in pair["en"])


@pytest.mark.slow
def test_real_build_is_deterministic(real_corpora, test_cache_dir, tmp_path):
    """Rebuild the Korean corpus from the cached downloads into a fresh cache: identical bytes."""
    spec = plugins.get_language("ko")
    source = spec.offline_corpora()[0]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for pin in parse_debian_uri(source.uri).pins:
        name = pin.filename.replace("%2B", "+")
        (downloads / name).write_bytes((test_cache_dir / "downloads" / name).read_bytes())
    rebuilt = build_debian_corpus(source.name, source.uri, tmp_path, resolve=None)
    cached = test_cache_dir / "corpora" / source.name
    for split in ("train", "validation"):
        assert (rebuilt / f"{split}.jsonl").read_bytes() == (cached / f"{split}.jsonl").read_bytes()
    meta = read_meta(rebuilt)
    assert meta["packages"][0]["pinned"] is True and meta["packages"][0]["version"] == "7.4.7-1+deb12u14"
