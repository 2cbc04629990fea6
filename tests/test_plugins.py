"""The plugin manager: built-ins, entry points, the kill switch, duplicate names, strategy lookup."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field

from xlang import hookimpl, plugins
from xlang.contract import Options
from xlang.errors import XlangError
from xlang.spec import ChatBits, LanguageSpec, ScriptRange


def _spec(code: str) -> LanguageSpec:
    return LanguageSpec(
        code=code,
        name=f"Test {code}",
        scripts=(ScriptRange(name="Thai", start=0x0E00, end=0x0E7F),),
        chat=ChatBits(system_prompt="s"),
    )


class _LanguagePlugin:
    def __init__(self, code: str) -> None:
        self.code = code

    @hookimpl
    def register_languages(self, register):
        register(_spec(self.code))


def test_shipped_languages_come_from_their_own_distributions(fresh_plugins):
    found = plugins.languages(fresh_plugins)
    assert {"ko", "zh", "en"} <= set(found)
    by_name = {info.name: info for info in plugins.plugin_infos(fresh_plugins)}
    for code in ("ko", "zh", "en"):
        assert by_name[found[code].plugin].distribution == f"xlang-{code}"
        assert "register_languages" in by_name[found[code].plugin].hooks


def test_kill_switch_leaves_only_builtins(monkeypatch):
    monkeypatch.setenv("XLANG_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = plugins.make_plugin_manager()
    assert plugins.languages(pm) == {}
    assert all(info.builtin for info in plugins.plugin_infos(pm))


def test_same_language_from_two_plugins_names_both(fresh_plugins):
    fresh_plugins.register(_LanguagePlugin("th"), name="thai-one")
    fresh_plugins.register(_LanguagePlugin("th"), name="thai-two")
    with pytest.raises(XlangError) as caught:
        plugins.languages(fresh_plugins)
    assert "'th'" in caught.value.message
    assert "thai-one" in caught.value.message and "thai-two" in caught.value.message


def test_unknown_language_lists_the_known_ones(fresh_plugins):
    with pytest.raises(XlangError) as caught:
        plugins.get_language("xx", fresh_plugins)
    assert "'xx'" in caught.value.message and "ko" in caught.value.message


class ScaleOptions(Options):
    factor: float = Field(default=2.0, gt=0)


def scale_initializer(*, new_token_ids, options: ScaleOptions):
    return {"rows": len(new_token_ids), "factor": options.factor}


class Extra:
    @hookimpl
    def register_embedding_initializers(self, register):
        register("scale-for-test", scale_initializer, options=ScaleOptions)


def test_strategies_are_chosen_by_name_and_unknown_names_list_known(fresh_plugins):
    fresh_plugins.register(Extra(), name="extra")
    strategy = plugins.get_strategy("embedding_initializers", "scale-for-test", fresh_plugins)
    assert strategy.plugin == "extra" and strategy.options is ScaleOptions
    with pytest.raises(XlangError) as caught:
        plugins.get_strategy("embedding_initializers", "nope", fresh_plugins)
    assert "scale-for-test" in caught.value.message


def test_a_strategy_gets_its_validated_options_and_only_the_inputs_it_names(fresh_plugins):
    fresh_plugins.register(Extra(), name="extra")
    strategy = plugins.get_strategy("embedding_initializers", "scale-for-test", fresh_plugins)
    # `model` and `texts` are offered but not named by the function: they are not passed
    assert strategy({"factor": 3}, model=None, texts=[], new_token_ids=[5, 6]) == {"rows": 2, "factor": 3.0}
    assert strategy(None, new_token_ids=[1]) == {"rows": 1, "factor": 2.0}
    with pytest.raises(XlangError, match="'scale-for-test' has no option 'steps'.*its options: factor"):
        strategy({"steps": 5}, new_token_ids=[1])
    with pytest.raises(XlangError, match="invalid options for embedding initializer 'scale-for-test': factor"):
        strategy({"factor": -1}, new_token_ids=[1])
    with pytest.raises(TypeError, match="not inputs of the contract"):
        strategy(None, new_token_ids=[1], surprise=True)


def test_a_strategy_without_options_refuses_any(fresh_plugins):
    class NoKnobs:
        @hookimpl
        def register_evaluators(self, register):
            register("count-for-test", lambda *, texts: {"texts": len(texts)})

    fresh_plugins.register(NoKnobs(), name="no-knobs")
    strategy = plugins.get_strategy("evaluators", "count-for-test", fresh_plugins)
    assert strategy(None, texts=["a", "b"], model=None) == {"texts": 2}
    with pytest.raises(XlangError, match="it takes no options"):
        strategy({"window": 3}, texts=[])


def test_register_with_a_non_options_class_is_refused(fresh_plugins):
    class Broken:
        @hookimpl
        def register_evaluators(self, register):
            register("broken-for-test", lambda **kwargs: {}, options=dict)

    fresh_plugins.register(Broken(), name="broken")
    with pytest.raises(XlangError, match="plugin 'broken'.*subclass of xlang.contract.Options"):
        plugins.strategies("evaluators", fresh_plugins)


def test_a_mistyped_strategy_kind_is_a_clear_error(fresh_plugins):
    with pytest.raises(XlangError, match="unknown strategy kind 'embedding_initialisers'; the kinds are"):
        plugins.strategies("embedding_initialisers", fresh_plugins)


def test_a_missing_builtin_fails_loudly(monkeypatch):
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, "xlang.builtin.not_there"))
    with pytest.raises(ModuleNotFoundError, match="xlang.builtin.not_there"):
        plugins.make_plugin_manager(load_entry_points=False)


def test_entry_points_are_not_loaded_at_import():
    code = (
        "import sys, xlang, xlang.plugins, xlang.cli;"
        "print(any(m.startswith('xlang_ko') for m in sys.modules), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_trace_switch_reports_hook_calls_and_registrations(monkeypatch, capsys):
    monkeypatch.setenv("XLANG_TRACE_HOOKS", "1")
    pm = plugins.make_plugin_manager()
    pm.hook.load_vit_data(uri="nothing://here", cache_dir=None)
    plugins.languages(pm)
    err = capsys.readouterr().err
    assert "load_vit_data(uri, cache_dir): no plugin answered (None)" in err
    assert "register_languages(register): plugin 'ko' registered 'ko'" in err
