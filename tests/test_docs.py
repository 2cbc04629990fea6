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
    assert len(hooks) >= 12
    for name, function in hooks.items():
        signature = f"{name}({', '.join(inspect.signature(function).parameters)})"
        assert f"### {signature}" in reference, f"docs/hooks.md lacks a '### {signature}' heading"


def test_reference_documents_no_hook_that_does_not_exist():
    reference = (DOCS / "hooks.md").read_text(encoding="utf-8")
    documented = {line[4:].split("(")[0] for line in reference.splitlines() if line.startswith("### ")}
    assert documented == set(_hook_functions())


def _section(reference: str, hook: str) -> str:
    start = reference.index(f"### {hook}(")
    end = reference.find("\n#", start + 4)
    return reference[start : end if end > 0 else None]


def test_each_strategy_hook_lists_exactly_the_inputs_the_core_passes():
    """The `inputs:` line of each strategy hook is the contract's list, which `Strategy.__call__` enforces."""
    from xlang.contract import STRATEGY_INPUTS

    reference = (DOCS / "hooks.md").read_text(encoding="utf-8")
    for kind, inputs in STRATEGY_INPUTS.items():
        section = _section(reference, f"register_{kind}")
        line = next(line for line in section.splitlines() if line.startswith("inputs: "))
        assert line == "inputs: " + ", ".join(f"`{name}`" for name in inputs), kind
        assert "register(name, " in section and "options=OptionsClass)" in section, kind
        hookspec_doc = inspect.getdoc(_hook_functions()[f"register_{kind}"]) or ""
        assert all(f"``{name}=``" in hookspec_doc for name in inputs), kind


def test_the_hook_reference_points_to_the_field_reference():
    """Fields are documented once, in the generated page (tests/test_plugin_reference.py checks it)."""
    reference = (DOCS / "hooks.md").read_text(encoding="utf-8")
    section = reference[reference.index("## LanguageSpec, field by field") :]
    assert "(plugin-reference.md)" in section and (DOCS / "plugin-reference.md").is_file()


def test_guide_pages_exist():
    for page in ("quickstart.md", "architecture.md", "hooks.md", "plugin-tutorial.md", "recipes.md"):
        assert (DOCS / page).is_file(), page
