"""Every hook is documented in docs/hooks.md with its exact signature; the docs' pages exist."""

from __future__ import annotations

import inspect
from pathlib import Path

from xlang import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hook_functions() -> dict[str, object]:
    return {
        name: function
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, "xlang_spec")
    }


def test_every_hook_is_in_the_reference_with_its_signature():
    reference = (DOCS / "hooks.md").read_text(encoding="utf-8")
    hooks = _hook_functions()
    assert len(hooks) >= 11
    for name, function in hooks.items():
        signature = f"{name}({', '.join(inspect.signature(function).parameters)})"
        assert f"### {signature}" in reference, f"docs/hooks.md lacks a '### {signature}' heading"


def test_reference_documents_no_hook_that_does_not_exist():
    reference = (DOCS / "hooks.md").read_text(encoding="utf-8")
    documented = {line[4:].split("(")[0] for line in reference.splitlines() if line.startswith("### ")}
    assert documented == set(_hook_functions())


def test_guide_pages_exist():
    for page in ("quickstart.md", "architecture.md", "hooks.md", "plugin-tutorial.md", "recipes.md"):
        assert (DOCS / page).is_file(), page
