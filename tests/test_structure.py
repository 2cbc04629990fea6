"""The shape of the code, checked with `ast` and `tokenize`: the import floors, no import cycle, no
language in the core, and a caller plus a plugin-driven test for every hook."""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
import unicodedata
from pathlib import Path

from xlang import hookspecs
from xlang.contract import STRATEGY_KINDS

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "xlang"
STAGE_FOLDERS = ("tokenizer", "embeddings", "data", "train", "vlm", "eval", "datagen", "serve", "teachers")
ORCHESTRATION = ("plugins", "resolve", "runner", "cli")
GROUND = ("spec", "hookspecs", "settings", "contract", "errors")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _core_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in CORE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every xlang module a file imports, at any depth (lazy imports inside functions count)."""
    found: set[str] = set()
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    known = _core_modules()
    return {name for name in found if name in known}


def _floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGE_FOLDERS:
        return "stage"
    if len(parts) > 1 and parts[1] == "builtin":
        return "builtin"
    if len(parts) > 1 and parts[1] in ORCHESTRATION:
        return parts[1]
    if len(parts) > 1 and parts[1] in GROUND:
        return "ground"
    return "other"


def test_orchestration_modules_import_no_stage_folder() -> None:
    """plugins.py, resolve.py, runner.py and cli.py name things; stage code is reached through plugins."""
    offenders = {
        name: sorted(module for module in _imports(path) if _floor(module) == "stage")
        for name, path in _core_modules().items()
        if _floor(name) in ORCHESTRATION
    }
    assert not {name: found for name, found in offenders.items() if found}


def test_no_import_runs_back_up_the_floors() -> None:
    """Ground imports nothing above it; stage folders never reach the manager, resolver, runner or CLI;
    built-ins never reach the resolver, runner or CLI."""
    forbidden = {
        "ground": {"stage", "builtin", *ORCHESTRATION},
        "stage": {"builtin", *ORCHESTRATION},
        "builtin": {"resolve", "runner", "cli"},
    }
    problems = []
    for name, path in _core_modules().items():
        floor = _floor(name)
        for module in _imports(path):
            if _floor(module) in forbidden.get(floor, set()):
                problems.append(f"{name} -> {module}")
    assert problems == []


def test_no_import_cycle_in_the_core() -> None:
    graph = {name: {m for m in _imports(path) if m != name} for name, path in _core_modules().items()}
    # a package's __init__ re-exporting its modules is not a cycle with them
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == 1:
                cycles.append(
                    trail[trail.index(neighbour) :] + [neighbour] if neighbour in trail else [node, neighbour]
                )
            elif neighbour not in state:
                visit(neighbour, trail + [neighbour])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


LANGUAGE_WORDS = re.compile(
    r"\b(korean|chinese|english|japanese|hindi|thai|hangul|hanzi|kanji|hiragana|katakana|mandarin|cjk)\b",
    re.IGNORECASE,
)


def _installed_codes() -> set[str]:
    from xlang import plugins

    return set(plugins.languages(plugins.make_plugin_manager()))


def _non_docstring_text(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and every string literal that is not a docstring."""
    source = path.read_text(encoding="utf-8")
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
        else:
            continue
        for index, statement in enumerate(body):
            # a docstring opens a body; an attribute docstring follows an assignment
            if (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
                and (index == 0 or isinstance(body[index - 1], ast.Assign | ast.AnnAssign))
            ):
                docstrings.add(statement.lineno)
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
        elif token.type == tokenize.STRING and token.start[0] not in docstrings:
            found.append((token.start[0], token.string))
    return found


def test_the_core_names_no_language() -> None:
    """No language code, language name or letter of a non-Latin script outside docstrings in xlang/."""
    codes = _installed_codes() | {"ko", "zh", "en", "ja"}
    code_pattern = re.compile(r"(?<![A-Za-z0-9_./-])(" + "|".join(sorted(codes)) + r")(?![A-Za-z0-9_])")
    problems = []
    for path in sorted(CORE.rglob("*.py")):
        for line, text in _non_docstring_text(path):
            body = text.strip("\"'rbfu")
            where = f"{path.relative_to(REPO)}:{line}: {text.strip()[:80]}"
            if LANGUAGE_WORDS.search(text):
                problems.append(where)
            elif any(unicodedata.category(c).startswith("L") and ord(c) > 0x24F for c in text):
                problems.append(where)
            elif code_pattern.search(body):
                problems.append(where)
    assert problems == []


def _hook_names() -> list[str]:
    return [
        name for name, function in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(function, "xlang_spec")
    ]


def _sources(folder: Path) -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(folder.rglob("*.py")))


def test_every_hook_has_a_caller_in_the_core() -> None:
    """A hook nothing calls is a promise to plugin authors that is not kept."""
    core = "\n".join(
        path.read_text(encoding="utf-8") for path in sorted(CORE.rglob("*.py")) if path.name != "hookspecs.py"
    )
    core += _sources(REPO / "recipes")
    missing = []
    for name in _hook_names():
        kind = name.removeprefix("register_")
        if kind in STRATEGY_KINDS:
            called = re.search(rf"strateg(y|ies)\(\s*\"{kind}\"", core) is not None
            assert 'f"register_{kind}"' in core
        elif name in ("register_languages", "register_recipes"):
            called = f'"{name}"' in core
        else:
            called = re.search(rf"(hook\.{name}\(|call_each\(\"{name}\"|call_first\(\"{name}\")", core) is not None
        if not called:
            missing.append(name)
    assert missing == []


def test_every_hook_is_implemented_by_a_plugin_in_a_test() -> None:
    """Each hook is driven through a plugin in some test: a `@hookimpl` function of that name in tests/."""
    tests = _sources(REPO / "tests")
    missing = [name for name in _hook_names() if not re.search(rf"@hookimpl\s*\n\s*def {name}\(", tests)]
    assert missing == []
