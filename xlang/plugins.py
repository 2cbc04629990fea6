"""The plugin manager: built-ins and entry-point plugins, and the registries their hooks fill.

Entry points load once, on first use (never at import time). `XLANG_DISABLE_PLUGIN_AUTOLOAD=1` skips
them. `XLANG_TRACE_HOOKS=1` prints every hook call to stderr: the register-callback hooks (called here,
plugin by plugin, outside pluggy's hook caller) with what each plugin registered, the `firstresult`
hooks with the plugin that answered, the others with their result.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from xlang import hookspecs
from xlang.contract import NoOptions, Options, Strategy, check_kind, kind_label
from xlang.errors import XlangError

ENTRY_POINT_GROUP = "xlang"
AUTOLOAD_KILL_SWITCH = "XLANG_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_PLUGINS: tuple[str, ...] = (
    "xlang.builtin.corpus_sources",
    "xlang.builtin.files",
    "xlang.builtin.tokenizer_strategies",
    "xlang.builtin.embedding_strategies",
    "xlang.builtin.evaluators",
    "xlang.builtin.vision",
    "xlang.builtin.teachers",
)


@dataclass(frozen=True)
class Registered:
    """One registered thing and the plugin that offered it (for error messages and `xlang plugins`)."""

    name: str
    value: Any
    plugin: str


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]
    builtin: bool


def _plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)


def _register_builtins(pm: pluggy.PluginManager) -> None:
    import importlib

    for module_name in BUILTIN_PLUGINS:  # a missing built-in is a broken install: let the import fail
        pm.register(importlib.import_module(module_name), name=module_name)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    if os.environ.get(AUTOLOAD_KILL_SWITCH, "").strip() not in ("", "0", "false", "False"):
        return
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
        except Exception as error:  # a broken third-party plugin must not hide which one broke
            raise XlangError(
                f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {error}; "
                f"fix or uninstall it, or set {AUTOLOAD_KILL_SWITCH}=1"
            ) from error
        pm.register(plugin, name=entry_point.name)
        pm._xlang_dists[entry_point.name] = entry_point.dist  # type: ignore[attr-defined]


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the built-ins and (unless switched off) the installed plugins."""
    pm = pluggy.PluginManager("xlang")
    pm.add_hookspecs(hookspecs)
    pm._xlang_dists = {}  # type: ignore[attr-defined]
    _register_builtins(pm)
    if load_entry_points:
        _load_entry_points(pm)
    if tracing():
        _trace_hook_calls(pm)
    return pm


def tracing() -> bool:
    return os.environ.get("XLANG_TRACE_HOOKS", "").strip() not in ("", "0", "false", "False")


def _trace(line: str) -> None:
    print(f"xlang hook {line}", file=sys.stderr, flush=True)


def _trace_hook_calls(pm: pluggy.PluginManager) -> None:
    """Trace every call through pluggy's hook caller; a `firstresult` hook is called one implementation at a
    time, in pluggy's order (the last registered first), so the trace can name the plugin that answered.

    pluggy's public monitoring (`add_hookcall_monitoring`) sees only the combined result, so this wraps the
    same inner executor that it wraps."""
    inner = pm._inner_hookexec

    def traced(hook_name: str, hook_impls: Any, kwargs: Any, firstresult: bool) -> Any:
        call = f"{hook_name}({', '.join(kwargs)})"
        offered = ", ".join(repr(impl.plugin_name) for impl in reversed(hook_impls)) or "none"
        _trace(f"{call}: {len(hook_impls)} implementation(s), asked in this order: {offered}")
        wrapped = any(impl.hookwrapper or impl.wrapper for impl in hook_impls)
        try:
            if not firstresult or wrapped:
                result = inner(hook_name, hook_impls, kwargs, firstresult)
                _trace(f"{call} -> {_short(result)}")
                return result
            for impl in reversed(hook_impls):
                answer = inner(hook_name, [impl], kwargs, True)
                if answer is not None:
                    _trace(f"{call}: answered by plugin {impl.plugin_name!r} -> {_short(answer)}")
                    return answer
            _trace(f"{call}: no plugin answered (None)")
            return None
        except BaseException as error:
            _trace(f"{call} raised {type(error).__name__}: {_short(str(error))}")
            raise

    pm._inner_hookexec = traced


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 120 else text[:117] + "..."


_manager: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, built on first use."""
    global _manager
    if _manager is None:
        _manager = make_plugin_manager()
    return _manager


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> None:
    """Swap the process-wide manager (tests give each case a fresh one)."""
    global _manager
    _manager = pm


def _collect(pm: pluggy.PluginManager, hook_name: str, kind: str | None, what: str) -> dict[str, Any]:
    """Call a register-callback hook on every plugin; `kind` set means named strategies with options."""
    registry: dict[str, Any] = {}
    owners: dict[str, str] = {}
    hook = getattr(pm.hook, hook_name)
    impls = hook.get_hookimpls()
    if tracing():
        offered = ", ".join(repr(_plugin_label(pm, impl.plugin)) for impl in impls) or "none"
        _trace(f"{hook_name}(register): {len(impls)} implementation(s): {offered}")
    for impl in impls:
        plugin_name = _plugin_label(pm, impl.plugin)
        before = len(registry)

        def register(*args: Any, _plugin: str = plugin_name, **keywords: Any) -> None:
            if kind is not None:
                if len(args) != 2 or set(keywords) - {"options"}:
                    usage = f"register(name, {kind_label(kind)}, options=OptionsClass)"
                    raise XlangError(f"plugin {_plugin!r}: {hook_name} takes {usage}")
                name, function = args
                options = keywords.get("options") or NoOptions
                if not (isinstance(options, type) and issubclass(options, Options)):
                    raise XlangError(
                        f"plugin {_plugin!r}: options of {kind_label(kind)} {name!r} must be a subclass of "
                        "xlang.contract.Options"
                    )
                value: Any = Strategy(kind, name, function, options, _plugin)
            else:
                (value,) = args
                name = getattr(value, "code", None) or value.name
            if name in registry:
                raise XlangError(
                    f"{what} {name!r} is registered twice: by plugin {owners[name]!r} and by plugin "
                    f"{_plugin!r}; uninstall one of them or rename the {what}"
                )
            registry[name] = value if kind is not None else Registered(name=name, value=value, plugin=_plugin)
            owners[name] = _plugin
            if tracing():
                _trace(f"{hook_name}(register): plugin {_plugin!r} registered {name!r}")

        impl.function(**{arg: register for arg in impl.argnames if arg == "register"})
        if tracing() and len(registry) == before:
            _trace(f"{hook_name}(register): plugin {plugin_name!r} registered nothing")
    return registry


def languages(pm: pluggy.PluginManager | None = None) -> dict[str, Registered]:
    return _collect(pm or get_plugin_manager(), "register_languages", None, what="language")


def get_language(code: str, pm: pluggy.PluginManager | None = None):  # -> LanguageSpec
    """The registered language `code`, or a message listing the known ones."""
    known = languages(pm)
    if code not in known:
        listing = ", ".join(sorted(known)) or "none (is autoload switched off?)"
        raise XlangError(
            f"unknown language {code!r}; known languages: {listing}. Install its plugin (e.g. xlang-{code})"
        )
    return known[code].value


def strategies(kind: str, pm: pluggy.PluginManager | None = None) -> dict[str, Strategy]:
    """Named strategies of one kind (see `xlang.contract.STRATEGY_KINDS`)."""
    check_kind(kind)
    return _collect(pm or get_plugin_manager(), f"register_{kind}", kind, what=kind_label(kind))


def get_strategy(kind: str, name: str, pm: pluggy.PluginManager | None = None) -> Strategy:
    """A strategy by name; the error lists the known names of that kind."""
    known = strategies(kind, pm)
    if name not in known:
        raise XlangError(f"unknown {kind_label(kind)} {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return known[name]


def recipes(pm: pluggy.PluginManager | None = None) -> dict[str, Registered]:
    return _collect(pm or get_plugin_manager(), "register_recipes", None, what="recipe")


def get_recipe(name: str, pm: pluggy.PluginManager | None = None) -> Any:
    known = recipes(pm)
    if name not in known:
        raise XlangError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(known)) or 'none'}")
    return known[name].value


def plugin_infos(pm: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    """What loaded and from where, for `xlang plugins`."""
    pm = pm or get_plugin_manager()
    dists = getattr(pm, "_xlang_dists", {})
    infos = []
    for name, plugin in pm.list_name_plugin():
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        dist = dists.get(name)
        if dist is not None:
            infos.append(PluginInfo(name, dist.metadata["Name"], dist.version, hooks, builtin=False))
        else:
            infos.append(PluginInfo(name, "xlang", _xlang_version(), hooks, builtin=name in BUILTIN_PLUGINS))
    return infos


def _xlang_version() -> str:
    try:
        return importlib.metadata.version("xlang")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def call_first(hook_name: str, pm: pluggy.PluginManager | None = None, **kwargs: Any) -> Any:
    """Call a firstresult hook with keyword arguments."""
    return getattr((pm or get_plugin_manager()).hook, hook_name)(**kwargs)


def call_each(hook_name: str, pm: pluggy.PluginManager | None = None, **kwargs: Any) -> Iterable[Any]:
    return getattr((pm or get_plugin_manager()).hook, hook_name)(**kwargs)


def register_plugin(plugin: object, name: str, pm: pluggy.PluginManager | None = None) -> Callable[[], None]:
    """Register a plugin object at run time (used by tests and notebooks); returns an undo function."""
    pm = pm or get_plugin_manager()
    pm.register(plugin, name=name)
    return lambda: pm.unregister(name=name)
