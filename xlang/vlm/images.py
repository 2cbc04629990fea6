"""Image references in visual-instruction records, resolved to RGB PIL images.

A record's `image` is a file path (relative to the data file) or a built-in reference to a photo that
ships inside a Python package, so the language plugins' seed sets need no image files:

- `skimage:NAME`      `skimage.data.NAME()` (`skimage:motorcycle` is the left view of `stereo_motorcycle`)
- `sklearn:FILE`      `sklearn.datasets.load_sample_image(FILE)`
- `matplotlib:FILE`   `matplotlib.cbook.get_sample_data(FILE)`

Hub datasets may also hand over PIL images directly; those pass through.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from xlang.errors import XlangError

BUILTIN_SCHEMES: tuple[str, ...] = ("skimage", "sklearn", "matplotlib")


def _to_rgb(array: Any) -> Any:
    """uint8 RGB image from a package array: grayscale, boolean masks and RGBA (onto white) included."""
    import numpy as np
    from PIL import Image

    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = ((array - low) / ((high - low) or 1.0) * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    return _flatten(image)


def _flatten(image: Any) -> Any:
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _builtin(scheme: str, name: str) -> Any:
    from PIL import Image

    try:
        if scheme == "skimage":
            import skimage.data

            if name == "motorcycle":
                return _to_rgb(skimage.data.stereo_motorcycle()[0])
            loader = getattr(skimage.data, name, None)
            if loader is None or name.startswith("_"):
                raise XlangError(f"image {scheme}:{name}: skimage.data has no image {name!r}")
            return _to_rgb(loader())
        if scheme == "sklearn":
            from sklearn.datasets import load_sample_image

            return _to_rgb(load_sample_image(name))
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data(name) as handle:
            image = Image.open(handle)
            image.load()
        return _flatten(image)
    except ImportError as error:
        extra = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(scheme, scheme)
        raise XlangError(f"image {scheme}:{name} needs the {extra} package; `pip install {extra}`") from error
    except XlangError:
        raise
    except Exception as error:  # each package raises its own type for a missing sample
        raise XlangError(f"image {scheme}:{name} could not be loaded: {error}") from error


def load_image(ref: Any, base_dir: Path | None = None) -> Any:
    """The RGB PIL image a record's `image` field names.

    Raises XlangError naming the reference when the file is missing or cannot be decoded.
    """
    from PIL import Image

    if isinstance(ref, Image.Image):
        return _flatten(ref)
    if isinstance(ref, dict) and ("bytes" in ref or "path" in ref):  # a `datasets` Image feature, undecoded
        import io

        source = io.BytesIO(ref["bytes"]) if ref.get("bytes") else ref["path"]
        return load_image(Image.open(source) if ref.get("bytes") else source, base_dir)
    if not isinstance(ref, str | os.PathLike) or not str(ref):
        raise XlangError(f"image reference {ref!r} is neither a path nor one of {', '.join(BUILTIN_SCHEMES)}:NAME")
    text = str(ref)
    scheme, sep, name = text.partition(":")
    if sep and scheme in BUILTIN_SCHEMES:
        return _builtin(scheme, name)
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise XlangError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return _flatten(image)
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for damaged files
        raise XlangError(f"image file {path} cannot be decoded ({type(error).__name__}: {error})") from error


def export_png(ref: Any, target: Path, base_dir: Path | None = None) -> Path:
    """Write the referenced image as a PNG at `target` (atomically), unless it is already there."""
    if target.is_file():
        return target
    image = load_image(ref, base_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".png", delete=False) as handle:
        image.save(handle, format="PNG")
    os.replace(handle.name, target)
    return target
