"""The xlang-debian plugin, driven through the plugin manager as xlang drives it: `debian://` corpora
(fetched, verified, extracted, split, cached) and `debian://file` fetches.

Two kinds of packages: small handmade `.deb` files served by a local HTTP server (the fetch, verify,
extract and split path without the network; the plugin reads the mirror from XLANG_DEBIAN_MIRROR),
and the real pinned Debian packages of the language plugins, in the session's test cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest
import xlang_debian
from file_limits import limit_file_size
from xlang_debian import build as corpus_build
from xlang_debian.archive import MIRROR_ENV
from xlang_debian.build import build_debian_corpus, parse_debian_uri, read_meta
from xlang_debian.extract import help_paragraphs, man_paragraphs, troff_text

from xlang import plugins
from xlang.builtin import corpus_sources
from xlang.data import corpus_stats, views
from xlang.errors import XlangError
from xlang.resolve import Resolver
from xlang.settings import XlangSettings
from xlang.spec import CorpusSource

REPO = Path(__file__).resolve().parent.parent

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


@pytest.fixture
def pm(archive: dict, monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    """A plugin manager with the installed plugins (xlang-debian among them), reading the local mirror."""
    monkeypatch.setenv(MIRROR_ENV, archive["mirror"])
    monkeypatch.delenv(plugins.AUTOLOAD_KILL_SWITCH, raising=False)
    return plugins.make_plugin_manager()


def _uri(archive: dict, key: str, extractor: str = "libreoffice-help", **options: str) -> str:
    query = f"deb={archive['paths'][key]}&sha256={archive['sha256'][key]}"
    extra = "".join(f"&{name}={value}" for name, value in options.items())
    return f"debian://{extractor}?{query}{extra}"


def _load(pm: pluggy.PluginManager, uri: str, split: str, cache_dir: Path, name: str = "help-ko", parallel=None):
    source = CorpusSource(name=name, uri=uri, parallel=parallel)
    return pm.hook.load_corpus(source=source, split=split, cache_dir=cache_dir)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- the plugin as xlang sees it ---------------------------------------------------------------------


def test_the_entry_point_registers_both_hooks(pm):
    assert pm.get_plugin("debian") is xlang_debian
    assert "debian" in [pm.get_name(impl.plugin) for impl in pm.hook.load_corpus.get_hookimpls()]
    assert "debian" in [pm.get_name(impl.plugin) for impl in pm.hook.fetch_file.get_hookimpls()]
    assert {info.name: info.distribution for info in plugins.plugin_infos(pm)}["debian"] == "xlang-debian"


def test_the_core_knows_no_debian(tmp_path):
    """Without the plugin a debian:// URI is nobody's; nothing in xlang/ imports the plugin."""
    bare = plugins.make_plugin_manager(load_entry_points=False)
    uri = "debian://libreoffice-help?deb=pool/a_1_all.deb&sha256=" + "a" * 64
    assert corpus_sources.load_corpus(source=uri, split="train", cache_dir=tmp_path) is None
    with pytest.raises(XlangError, match=r"no plugin loads corpus URI .*scheme debian://"):
        Resolver(XlangSettings(cache_dir=tmp_path), bare).load(CorpusSource(name="x", uri=uri), "train")
    importers = [path for path in (REPO / "xlang").rglob("*.py") if "xlang_debian" in path.read_text(encoding="utf-8")]
    assert importers == []


def test_other_schemes_pass(tmp_path):
    assert xlang_debian.load_corpus(source="file:///x.txt", split="train", cache_dir=tmp_path) is None
    assert xlang_debian.fetch_file(uri="pypi://x==1/x/y", cache_dir=tmp_path) is None
    assert xlang_debian.fetch_file(uri="not a uri", cache_dir=tmp_path) is None


# --- handmade packages through the hooks --------------------------------------------------------------


def test_handmade_package_is_fetched_verified_extracted_and_split(pm, archive, tmp_path):
    uri = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="500")
    train = _load(pm, uri, "train", tmp_path)
    validation = _load(pm, uri, "validation", tmp_path)
    assert train.column_names == ["text", "doc"] and train.num_rows and validation.num_rows
    records = list(train) + list(validation)
    assert set(train["doc"]).isdisjoint(validation["doc"])
    assert all("서식 메뉴 & 대화 상자" in r["text"] or r["text"] == "단축키 Ctrl+F" for r in records)
    assert "단축키 Ctrl+F" in {r["text"] for r in records}  # the Mac variant is hidden, the default kept
    assert not any("Page" in r["text"] for r in records)  # untranslated English fallback dropped
    folder = tmp_path / "corpora" / "help-ko"
    assert [r["text"] for r in _lines(folder / "train.jsonl")] == list(train["text"])
    meta = read_meta(folder)
    (package,) = meta["packages"]
    assert package["sha256"] == archive["sha256"]["ko"] and package["pinned"] is True
    assert package["version"] == "1.0-1+test1"
    assert meta["dropped"]["untranslated"] == 12 and meta["dropped"]["tiny"] == 12
    assert meta["splits"]["train"]["records"] == train.num_rows
    assert meta["splits"]["validation"]["target_chars"] > 0
    assert (tmp_path / "downloads" / "xlang-help-ko_1.0-1+test1_all.deb").is_file()
    cached = Resolver(XlangSettings(cache_dir=tmp_path), pm).cached_corpus_meta(CorpusSource(name="help-ko", uri=uri))
    assert cached == meta  # the core reads the build record where the plugin leaves it


def test_a_literal_plus_in_a_pool_path_stays_a_plus(archive, tmp_path):
    """`+` in a query is a space only in HTML forms: read that way the pin names a file that does not
    exist, and the apt fallback used to replace it with a 'left the Debian archive' warning."""
    encoded = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="500")
    literal = encoded.replace("%2B", "+")
    assert "+test1" in literal and parse_debian_uri(literal).pins == parse_debian_uri(encoded).pins

    def current(package: str) -> tuple[str, str, str]:
        return (
            f"{archive['mirror']}/current/xlang-help-ko_2.0-1_all.deb",
            "xlang-help-ko_2.0-1_all.deb",
            archive["sha256"]["ko"],
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folder = build_debian_corpus("help-ko", literal, tmp_path, mirror=archive["mirror"], resolve=current)
        (package,) = read_meta(folder)["packages"]
        assert package["pinned"] is True and package["version"] == "1.0-1+test1"
        assert package["url"].endswith("/xlang-help-ko_1.0-1%2Btest1_all.deb")
        again = build_debian_corpus("help-ko", encoded, tmp_path / "b", mirror=archive["mirror"], resolve=None)
    assert (folder / "train.jsonl").read_bytes() == (again / "train.jsonl").read_bytes()


def test_build_is_deterministic_and_cached(pm, archive, tmp_path, monkeypatch):
    uri = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="500")
    _load(pm, uri, "train", tmp_path / "a")
    _load(pm, uri, "train", tmp_path / "b")
    first, second = tmp_path / "a" / "corpora" / "help-ko", tmp_path / "b" / "corpora" / "help-ko"
    for split in ("train", "validation"):
        assert (first / f"{split}.jsonl").read_bytes() == (second / f"{split}.jsonl").read_bytes()
    stamp = (first / "meta.json").stat().st_mtime_ns
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9/debian")  # served from the cache: no network
    assert _load(pm, uri, "validation", tmp_path / "a").num_rows > 0
    assert (first / "meta.json").stat().st_mtime_ns == stamp


def test_changed_uri_rebuilds_in_place(pm, archive, tmp_path):
    narrow = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="500")
    wide = _uri(archive, "ko", require="hangul", max_share="0.5", validation_chars="900")
    _load(pm, narrow, "train", tmp_path)
    _load(pm, wide, "train", tmp_path)
    assert read_meta(tmp_path / "corpora" / "help-ko")["uri"] == wide
    assert sorted(p.name for p in (tmp_path / "corpora").iterdir()) == ["help-ko"]


def test_parallel_pairs_share_page_and_id(pm, archive, tmp_path):
    uri = (
        f"debian://libreoffice-help-parallel?deb={archive['paths']['en']}&sha256={archive['sha256']['en']}"
        f"&deb={archive['paths']['ko']}&sha256={archive['sha256']['ko']}&require=hangul&max_share=0.5&validation_chars=900"
    )
    pairs = [
        dict(pair)
        for split in ("train", "validation")
        for pair in _load(pm, uri, split, tmp_path, name="help-en-ko", parallel=("en", "ko"))
    ]
    # three translated paragraphs and the shortcut per page; a validation pair is removed from train
    assert len({(pair["en"], pair["ko"]) for pair in pairs}) == 12 * 3 + 1
    for pair in pairs:
        assert set(pair) == {"en", "ko", "doc"}
        if pair["en"].startswith("Page"):
            page, number = pair["en"].split()[1], pair["en"].split()[3]
            assert pair["ko"].startswith(f"{page}쪽 {number}번째")
    assert {"en": "Shortcut Ctrl+F", "ko": "단축키 Ctrl+F"} in [{k: p[k] for k in ("en", "ko")} for p in pairs]
    with pytest.raises(XlangError, match=r"is parallel: its CorpusSource needs parallel="):
        _load(pm, uri, "train", tmp_path, name="help-en-ko-bare")


def test_man_pages_become_paragraphs(pm, archive, tmp_path):
    uri = _uri(archive, "man", extractor="manpages", manpath="xx", validation_chars="10")
    train, validation = (_load(pm, uri, split, tmp_path, name="man-xx") for split in ("train", "validation"))
    assert set(validation["doc"]) == {"man5/motd.5"}  # the smallest page when none fits the budget
    paragraphs = list(train["text"]) + list(validation["text"])
    assert "motd - message of the day" in paragraphs and "other language" not in paragraphs
    assert "ls - “list” 中" in paragraphs
    assert "ls lists files and folders." in paragraphs
    assert "-a, --all do not ignore entries starting with . ls(1)" in paragraphs
    assert not any("macro body" in text or "comment" in text for text in paragraphs)


def test_without_require_other_scripts_are_kept(pm, archive, tmp_path):
    uri = _uri(archive, "ko", max_share="0.5", validation_chars="500")
    texts = [r["text"] for split in ("train", "validation") for r in _load(pm, uri, split, tmp_path)]
    assert any(text.startswith("Page ") for text in texts)  # the English fallback stays without require=
    assert read_meta(tmp_path / "corpora" / "help-ko")["dropped"]["untranslated"] == 0


def test_one_file_out_of_a_package(pm, archive, tmp_path, monkeypatch):
    uri = _uri(archive, "man", extractor="file", path="usr/share/man/xx/man5/motd.5")
    path = pm.hook.fetch_file(uri=uri, cache_dir=tmp_path)
    assert path == tmp_path / "debian-files" / "xlang-man-xx_1.0-1_all" / "usr/share/man/xx/man5/motd.5"
    assert path.read_bytes().startswith(b".SH NAME")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    with pytest.raises(XlangError, match="has no regular file usr/share/nothing"):
        pm.hook.fetch_file(uri=uri.replace("man/xx/man5/motd.5", "nothing"), cache_dir=tmp_path)
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9/debian")
    assert pm.hook.fetch_file(uri=uri, cache_dir=tmp_path) == path  # cached: no network


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("usr/share/man/xx/man5/motd.5", "../../etc/passwd"), "no '..'"),
        (("path=", "paht="), "unknown option.*paht"),
        (("&path=usr/share/man/xx/man5/motd.5", ""), "needs exactly one each of path"),
        (("sha256=", "sha256=0"), "not 64 hex digits"),
        (("debian://file?", "debian://libreoffice-help?"), "is a debian:// corpus, not one file"),
    ],
)
def test_bad_file_uris_are_named(pm, archive, tmp_path, change, message):
    uri = _uri(archive, "man", extractor="file", path="usr/share/man/xx/man5/motd.5").replace(*change)
    with pytest.raises(XlangError, match=message):
        pm.hook.fetch_file(uri=uri, cache_dir=tmp_path)


def test_a_file_uri_is_not_a_corpus(pm, archive, tmp_path):
    uri = _uri(archive, "man", extractor="file", path="usr/share/man/xx/man5/motd.5")
    with pytest.raises(XlangError, match="names one file of a package, not a corpus"):
        _load(pm, uri, "train", tmp_path)


def test_checksum_mismatch_leaves_nothing(pm, archive, tmp_path):
    uri = _uri(archive, "ko").replace(archive["sha256"]["ko"], "0" * 64)
    with pytest.raises(XlangError, match="checksum mismatch .* expected sha256 0{64}"):
        _load(pm, uri, "train", tmp_path)
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


def test_unreachable_archive_is_one_clear_error(pm, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9/debian")
    uri = "debian://libreoffice-help?deb=pool/main/x/x/x_1_all.deb&sha256=" + "a" * 64
    with pytest.raises(XlangError, match="cannot reach the Debian archive at http://127.0.0.1:9.*XLANG_DEBIAN_MIRROR"):
        _load(pm, uri, "train", tmp_path, name="x")
    assert not (tmp_path / "corpora").exists()


def test_empty_extraction_is_refused(pm, archive, tmp_path):
    uri = _uri(archive, "en", require="hangul")
    with pytest.raises(XlangError, match="empty after extraction .* without the required script HANGUL"):
        _load(pm, uri, "train", tmp_path, name="help-en")
    assert not (tmp_path / "corpora").exists()


def test_interrupted_build_leaves_no_corpus(pm, archive, tmp_path, monkeypatch):
    uri = _uri(archive, "ko", require="hangul", max_share="0.5")
    real_write = corpus_build._write_jsonl

    def write_then_die(path: Path, records: list) -> None:
        real_write(path, records)
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_build, "_write_jsonl", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        _load(pm, uri, "train", tmp_path)
    assert list((tmp_path / "corpora").iterdir()) == []


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("debian://nonsense?deb=a.deb&sha256=" + "a" * 64, "unknown extractor 'nonsense'"),
        ("debian://libreoffice-help?deb=a.deb", "found 1 deb and 0 sha256"),
        ("debian://libreoffice-help?deb=a.deb&sha256=xyz", "not 64 hex digits"),
        ("debian://libreoffice-help?deb=a.deb&sha256=" + "a" * 64 + "&colour=red", "unknown option"),
        ("debian://manpages?deb=a.deb&sha256=" + "a" * 64, "needs manpath="),
        ("debian://libreoffice-help?deb=a.deb&sha256=" + "a" * 64 + "&require=hangle", "require=hangle names no"),
        ("debian://libreoffice-help?deb=a.deb&sha256=" + "a" * 64 + "&max_share=2", r"max_share in \(0, 1\]"),
        ("debian://libreoffice-help?deb=a.deb&sha256=" + "a" * 64 + "&min_chars=two", "min_chars='two' is not"),
    ],
)
def test_bad_debian_uris_are_named(pm, tmp_path, uri, message):
    with pytest.raises(XlangError, match=message):
        _load(pm, uri, "train", tmp_path, name="bad")
    assert not (tmp_path / "downloads").exists()  # refused before any download


def test_unknown_split_is_named(pm, archive, tmp_path):
    with pytest.raises(XlangError, match="unknown split 'test'"):
        _load(pm, _uri(archive, "ko"), "test", tmp_path)


# --- extraction units ----------------------------------------------------------------------------


def test_help_paragraphs_keep_default_variants_and_entities():
    page = help_page(
        "ko", [("par_1", "A&nbsp;&lt;b&gt; <br/>c"), ("hd_2", '<span hidden="true" id="WRITERx">W</span>x')]
    )
    assert help_paragraphs(page.decode()) == [("par_1", "A <b> c"), ("hd_2", "x")]


def test_troff_escapes_and_cjk_line_joining():
    assert troff_text(r"\fB\-\-all\fR \(em \*(lqquoted\*(rq \e \s-1small\s0") == "--all — “quoted” \\ small"
    assert man_paragraphs("第一行\n第二行\nand English\n") == ["第一行第二行 and English"]


# --- the real Debian packages of the language plugins -----------------------------------------------


@pytest.fixture(scope="session")
def real_plugins() -> pluggy.PluginManager:
    return plugins.make_plugin_manager()


@pytest.fixture(scope="session")
def real_resolver(test_cache_dir: Path, real_plugins: pluggy.PluginManager) -> Resolver:
    return Resolver(XlangSettings(cache_dir=test_cache_dir), real_plugins)


@pytest.fixture(scope="session")
def real_corpora(real_resolver: Resolver) -> dict[str, dict[str, dict[str, object]]]:
    """Every offline corpus of ko, zh and en through the resolver, from the pinned Debian packages."""
    loaded: dict[str, dict[str, dict[str, object]]] = {}
    for code in ("ko", "zh", "en"):
        spec = real_resolver.language(code)
        loaded[code] = {
            source.name: {split: real_resolver.load(source, split) for split in ("train", "validation")}
            for source in spec.corpora
            if source.kind == "offline"
        }
    return loaded


@pytest.mark.slow
@pytest.mark.parametrize(("code", "minimum"), [("ko", 500_000), ("zh", 500_000)])
def test_real_corpora_are_big_enough(real_corpora, real_resolver, code, minimum):
    spec = real_resolver.language(code)
    mono = {source.name: real_corpora[code][source.name] for source in spec.monolingual_corpora()}
    stats = corpus_stats(spec, mono).splits
    assert stats["train"].target_chars + stats["validation"].target_chars >= minimum
    assert stats["train"].target_share > 0.5
    assert 20_000 <= stats["validation"].target_chars and stats["validation"].chars <= 65_000


@pytest.mark.slow
def test_real_english_corpus(real_corpora, real_resolver):
    spec = real_resolver.language("en")
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
def test_real_parallel_pairs(real_corpora, real_resolver, code):
    spec = real_resolver.language(code)
    (source,) = spec.parallel_corpora()
    train = real_corpora[code][source.name]["train"]
    assert train.num_rows > 15_000
    for pair in train.select(range(0, train.num_rows, 97)):
        assert pair["en"] and pair[code] and pair["en"] != pair[code]
        assert spec.has_target_text(pair[code]) and not any("\uac00" <= c <= "\ud7a3" for c in pair["en"])
    records = real_resolver.parallel_records(spec, "validation")
    assert records and all(set(record) == {"en", code} for record in records)


@pytest.mark.slow
def test_real_paragraphs_and_documents_through_the_resolver(real_corpora, real_resolver):
    spec = real_resolver.language("ko")
    dataset = real_resolver.dataset(spec, "validation")
    paragraphs = views.paragraphs(dataset, spec, max_chars=20_000)
    documents = views.documents(dataset, spec, max_chars=20_000)
    assert sum(map(len, paragraphs)) == sum(map(len, documents)) == 20_000
    assert len(documents) < len(paragraphs) and spec.target_share("".join(paragraphs)) > 0.5
    (source,) = spec.monolingual_corpora()
    meta = real_resolver.cached_corpus_meta(source)
    assert meta is not None and meta["format"] == corpus_build.FORMAT_VERSION and meta["uri"] == source.uri


@pytest.mark.slow
def test_real_build_is_deterministic(real_corpora, real_resolver, test_cache_dir, tmp_path):
    """Rebuild the Korean corpus from the cached downloads into a fresh cache: identical bytes."""
    source = real_resolver.language("ko").monolingual_corpora()[0]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for pin in parse_debian_uri(source.uri).pins:
        shutil.copyfile(test_cache_dir / "downloads" / pin.filename, downloads / pin.filename)
    rebuilt = build_debian_corpus(source.name, source.uri, tmp_path, resolve=None)
    cached = test_cache_dir / "corpora" / source.name
    for split in ("train", "validation"):
        assert (rebuilt / f"{split}.jsonl").read_bytes() == (cached / f"{split}.jsonl").read_bytes()
    meta = read_meta(rebuilt)
    assert meta["packages"][0]["pinned"] is True and meta["packages"][0]["version"] == "7.4.7-1+deb12u14"


def test_real_word_list_through_fetch_file(real_resolver):
    """The hunspell-ko dictionary that languages/ko names, fetched once into the test cache."""
    (source,) = [v for v in real_resolver.language("ko").vocabularies if v.uri.startswith("debian://file?")]
    path = real_resolver.fetch_file(source.uri)
    assert path.name == "ko.dic" and path.is_relative_to(real_resolver.settings.cache_dir / "debian-files")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert int(lines[0]) > 10_000 and len(lines) > 10_000
    assert sum(real_resolver.language("ko").has_target_text(line.split("/")[0]) for line in lines[1:1000]) > 900


def test_real_pool_path_with_a_literal_plus(real_plugins, real_resolver, test_cache_dir, tmp_path):
    """A real pin written with `+`: read from the copied download, no network, no warning."""
    spec = real_resolver.language("ko")
    pin = parse_debian_uri(spec.monolingual_corpora()[0].uri).pins[0]
    assert "+" in pin.filename
    (tmp_path / "downloads").mkdir()
    shutil.copyfile(test_cache_dir / "downloads" / pin.filename, tmp_path / "downloads" / pin.filename)
    member = "usr/share/libreoffice/help/ko/text/sbasic/guide/basic_2_python.html"
    uri = f"debian://file?deb={pin.pool_path}&sha256={pin.sha256}&path={member}"
    assert "%2B" not in uri and "+deb12u14" in uri
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = real_plugins.hook.fetch_file(uri=uri, cache_dir=tmp_path)
    assert path == tmp_path / "debian-files" / pin.filename.removesuffix(".deb") / member
    assert spec.has_target_text(path.read_text(encoding="utf-8"))
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [pin.filename]  # nothing else fetched


FETCH_UNDER_A_SIZE_LIMIT = """
import json, sys
from pathlib import Path
from xlang_debian.archive import DebPin, fetch_deb
from xlang.cli import os_error_message

pool, sha256, downloads, mirror = sys.argv[1:]
try:
    fetch_deb(DebPin(pool, sha256), Path(downloads), mirror=mirror, resolve=None)
except OSError as error:
    print(json.dumps({"type": type(error).__name__, "filename": error.filename, "message": os_error_message(error)}))
"""


def test_a_full_disk_while_downloading_blames_the_disk_not_the_network(archive, tmp_path):
    """A child process may write no file past 1 KiB (EFBIG, SIGXFSZ ignored) while the handmade package is larger:
    the download fails on the local write, with the network fine. The message must name the file being written
    and say what happened to it; nothing may be left in the downloads folder."""
    import subprocess
    import sys

    downloads = tmp_path / "downloads"
    pool = archive["paths"]["ko"]
    assert len(make_deb(_help_files("ko", translate=True))) > 1024
    arguments = [pool, archive["sha256"]["ko"], str(downloads), archive["mirror"]]
    child = subprocess.run(
        [sys.executable, "-c", FETCH_UNDER_A_SIZE_LIMIT, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_file_size(1024),
    )
    assert child.returncode == 0, child.stderr
    raised = json.loads(child.stdout)
    target = downloads / "xlang-help-ko_1.0-1+test1_all.deb"
    assert raised["filename"] == str(target), raised
    assert raised["message"].startswith(f"{target}: the file grew past the size"), raised
    assert "network" not in raised["message"] and "Debian archive" not in raised["message"]
    assert list(downloads.iterdir()) == []
