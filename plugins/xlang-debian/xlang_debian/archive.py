"""Fetch pinned Debian packages over plain HTTP and read their files, with no apt or dpkg needed.

A `.deb` is an `ar` archive whose `data.tar.*` member holds the installed tree. Every download is
checked against a pinned SHA256; plain HTTP is therefore as safe as HTTPS and works on mirrors
without certificates. When Debian has dropped the pinned version from its pool (the archive keeps
only current versions), `apt-get download --print-uris` names the current one and the SHA256 from
apt's signed index; the version actually used is recorded, and a warning says the pin moved.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from xlang.assets.integrity import record_entry, reuse_entry
from xlang.atomic import failed_on_disk, owned_prefix, remove_dead_staging, write_all
from xlang.errors import XlangError
from xlang_debian.options import FILE_FORM
from xlang_debian.options import FILE_OPTIONS as FILE_OPTION_TABLE

DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "XLANG_DEBIAN_MIRROR"
SNAPSHOT_HINT = "http://snapshot.debian.org/archive/debian/20250520T000000Z"
_TIMEOUT_S = 60
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DebPin:
    """A package file in a Debian pool, e.g. `pool/main/m/manpages-zh/manpages-zh_1.6.4.0-1_all.deb`."""

    pool_path: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.pool_path.rsplit("/", 1)[-1]

    @property
    def package(self) -> str:
        return self.filename.split("_", 1)[0]

    @property
    def version(self) -> str:
        parts = self.filename.split("_")
        return parts[1] if len(parts) >= 3 else ""


@dataclass(frozen=True)
class FetchedDeb:
    """A verified package file in the download cache, and where it really came from."""

    path: Path
    package: str
    version: str
    url: str
    sha256: str
    pinned: bool
    """False when the pinned file had left the archive and apt resolved a newer one."""

    def record(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = self.path.name
        return data


PackageLookup = Callable[[str], "tuple[str, str, str] | None"]
"""Package name -> (url, filename, sha256) of its current version, or None when unknown."""


def query_values(query: str) -> dict[str, list[str]]:
    """The options of a `debian://` URI's query, name -> values in the order given.

    Percent escapes are decoded but a `+` stays a `+`: Debian versions contain one
    (`7.4.7-1+deb12u14`), and the HTML-form rule that reads it as a space would name a package file
    that does not exist (`urllib.parse.parse_qs` applies that rule).
    """
    values: dict[str, list[str]] = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            values.setdefault(urllib.parse.unquote(name), []).append(urllib.parse.unquote(value))
    return values


def mirror_url(mirror: str | None = None) -> str:
    return (mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")


def apt_resolve(package: str) -> tuple[str, str, str] | None:
    """Ask apt (if present, with package lists) for the current URL and SHA256 of `package`."""
    if shutil.which("apt-get") is None:
        return None
    try:
        done = subprocess.run(
            ["apt-get", "download", "--print-uris", package],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        match = re.match(r"^'([^']+)'\s+(\S+)\s+\d+\s+SHA256:([0-9a-f]{64})", line.strip())
        if match:
            return match.group(1), urllib.parse.unquote(match.group(2)), match.group(3)
    return None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path, sha256: str) -> None:
    """Stream `url` into `target` atomically; raises HTTPError as is (the caller handles 404)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    remove_dead_staging(target.parent)
    fd, part = tempfile.mkstemp(prefix=owned_prefix(target.name, "-tmp"), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                write_all(out, chunk, target)  # a full disk is the disk's fault, not the network's
        got = digest.hexdigest()
        if got != sha256.lower():
            raise XlangError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; the mirror served a "
                f"different file. Use another mirror ({MIRROR_ENV}=...) or update the pin in the corpus URI"
            )
        os.replace(part, target)
    finally:
        if os.path.exists(part):
            os.unlink(part)


def fetch_deb(
    pin: DebPin,
    downloads: Path,
    mirror: str | None = None,
    resolve: PackageLookup | None = apt_resolve,
) -> FetchedDeb:
    """The verified `.deb` for `pin` in `downloads`, downloading it once.

    A cached file is re-hashed (milliseconds) so a truncated or tampered copy is fetched again.
    """
    base = mirror_url(mirror)
    target = downloads / urllib.parse.unquote(pin.filename)
    url = f"{base}/{urllib.parse.quote(urllib.parse.unquote(pin.pool_path))}"
    if target.exists() and _sha256_of(target) == pin.sha256.lower():
        return FetchedDeb(target, pin.package, pin.version, url, pin.sha256.lower(), pinned=True)
    try:
        _download(url, target, pin.sha256)
        return FetchedDeb(target, pin.package, pin.version, url, pin.sha256.lower(), pinned=True)
    except urllib.error.HTTPError as error:
        if error.code not in (404, 410):
            raise XlangError(
                f"cannot download {url} (HTTP {error.code}); retry later or set {MIRROR_ENV} to another mirror"
            ) from error
    except (urllib.error.URLError, OSError) as error:
        if failed_on_disk(error):  # write_all named the file
            raise
        reason = getattr(error, "reason", error)
        raise XlangError(
            f"cannot reach the Debian archive at {base} for {pin.filename} ({reason}); check the network "
            f"or set {MIRROR_ENV} to a reachable mirror"
        ) from error
    return _fetch_current(pin, downloads, url, resolve)


def _fetch_current(pin: DebPin, downloads: Path, pinned_url: str, resolve: PackageLookup | None) -> FetchedDeb:
    resolved = resolve(pin.package) if resolve is not None else None
    if resolved is None:
        raise XlangError(
            f"{pinned_url} is gone from the archive (404) and apt could not name a current {pin.package}; "
            f"run `apt-get update`, or point {MIRROR_ENV} at a snapshot that still has it (e.g. {SNAPSHOT_HINT})"
        )
    url, filename, sha256 = resolved
    target = downloads / filename
    if not (target.exists() and _sha256_of(target) == sha256):
        try:
            _download(url, target, sha256)
        except urllib.error.URLError as error:
            raise XlangError(f"cannot download {url} for {pin.package} ({error}); check the network") from error
    version = filename.split("_")[1] if filename.count("_") >= 2 else ""
    warnings.warn(
        f"{pin.filename} left the Debian archive; using {filename} from apt instead (recorded in the corpus meta.json)",
        stacklevel=3,
    )
    return FetchedDeb(target, pin.package, version, url, sha256, pinned=False)


def _ar_members(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """Members of an `ar` archive (the common format of .deb files): 60-byte headers, 2-byte aligned."""
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset : offset + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"bad ar header at byte {offset}")
        name = header[0:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = offset + 60
        yield name, blob[start : start + size]
        offset = start + size + (size % 2)


def _decompress(name: str, payload: bytes) -> bytes:
    if name.endswith(".xz") or name.endswith(".lzma"):
        return lzma.decompress(payload)
    if name.endswith(".gz"):
        return gzip.decompress(payload)
    if name.endswith(".bz2"):
        return bz2.decompress(payload)
    if name.endswith(".tar"):
        return payload
    raise XlangError(f"unsupported package compression {name!r}; only xz, gzip, bzip2 and plain tar are read")


def deb_files(deb: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(path, content) of the regular files in the package whose path (no leading `./`) `wanted` accepts.

    Reads the tar stream in memory: nothing is unpacked to disk, so nothing is left behind.
    """
    try:
        members = dict(_ar_members(deb.read_bytes()))
    except (OSError, ValueError) as error:
        raise XlangError(
            f"{deb} is not a readable Debian package ({error}); delete it so it is downloaded again"
        ) from error
    data_name = next((name for name in members if name.startswith("data.tar")), None)
    if data_name is None:
        raise XlangError(f"{deb} has no data.tar member; it is not a Debian binary package")
    try:
        tar_bytes = _decompress(data_name, members[data_name])
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as archive:
            for member in archive:
                path = member.name.removeprefix("./")
                if member.isfile() and wanted(path):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield path, handle.read()
    except (lzma.LZMAError, OSError, EOFError, tarfile.TarError) as error:
        raise XlangError(f"{deb} has a damaged {data_name} ({error}); delete it so it is downloaded again") from error


FILE_OPTIONS = tuple(option.name for option in FILE_OPTION_TABLE)
FILE_URI_FORM = FILE_FORM


def parse_file_uri(uri: str) -> tuple[DebPin, str]:
    """The package pin and the member path of a `debian://file?...` URI; says what is wrong otherwise."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "debian" or parsed.netloc != "file":
        raise XlangError(f"{uri!r} is not a {FILE_URI_FORM} URI")
    query = query_values(parsed.query)
    unknown = sorted(set(query) - set(FILE_OPTIONS))
    if unknown:
        raise XlangError(
            f"{uri!r}: unknown option(s) {', '.join(unknown)}; a {FILE_URI_FORM} URI takes only those three"
        )
    missing = [name for name in FILE_OPTIONS if len(query.get(name, [])) != 1]
    if missing:
        raise XlangError(f"{uri!r} needs exactly one each of {', '.join(missing)}; write {FILE_URI_FORM}")
    digest = query["sha256"][0]
    if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise XlangError(f"{uri!r}: sha256 {digest!r} is not 64 hex digits")
    wanted = query["path"][0].strip("/")
    if not wanted or ".." in Path(wanted).parts:
        raise XlangError(f"{uri!r} is not a {FILE_URI_FORM} URI: path= must name a file inside the package, no '..'")
    return DebPin(query["deb"][0], digest.lower()), wanted


def fetch_debian_file(
    uri: str, cache_dir: Path, mirror: str | None = None, resolve: PackageLookup | None = apt_resolve
) -> Path:
    """One file out of a pinned package, e.g. a word list or a font that a language names:
    `debian://file?deb=POOL_PATH&sha256=HEX&path=usr/share/hunspell/ko.dic`.

    The file lands in `<cache_dir>/debian-files/<package file>/<path>` (written atomically) and is
    reused from there without touching the network.
    """
    pin, wanted = parse_file_uri(uri)
    entry = Path(cache_dir) / "debian-files" / pin.filename.removesuffix(".deb")
    target = entry / wanted
    if target.is_file() and reuse_entry(entry):
        return target
    deb = fetch_deb(pin, Path(cache_dir) / "downloads", mirror=mirror, resolve=resolve)
    for _, content in deb_files(deb.path, lambda path: path == wanted):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_staging(target.parent)
        fd, part = tempfile.mkstemp(prefix=owned_prefix(target.name, "-tmp"), suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.replace(part, target)
        finally:
            if os.path.exists(part):
                os.unlink(part)
        record_entry(entry)
        return target
    raise XlangError(f"{pin.filename} has no regular file {wanted}; check path= in {uri}")
