"""The plugin manager: built-ins, entry points, the kill switch, duplicate names, strategy lookup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xlang import hookimpl, plugins
from xlang.errors import XlangError
from xlang.spec import ChatBits, LanguageSpec, ScriptRange

PROMPTS = {
    task: f"{task} prompt" for task in ("object-centric", "location-centric", "atmosphere-centric", "conversation")
}


def _spec(code: str) -> LanguageSpec:
    return LanguageSpec(
        code=code,
        name=f"Test {code}",
        scripts=(ScriptRange(name="Thai", start=0x0E00, end=0x0E7F),),
        prompts=PROMPTS,
        chat=ChatBits(system_prompt="s", answer_in_language="a"),
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


def test_strategies_are_chosen_by_name_and_unknown_names_list_known(fresh_plugins):
    class Extra:
        @hookimpl
        def register_embedding_initializers(self, register):
            register("zeros-for-test", lambda **kwargs: None)

    fresh_plugins.register(Extra(), name="extra")
    assert callable(plugins.get_strategy("embedding_initializers", "zeros-for-test", fresh_plugins))
    with pytest.raises(XlangError) as caught:
        plugins.get_strategy("embedding_initializers", "nope", fresh_plugins)
    assert "zeros-for-test" in caught.value.message


def test_entry_points_are_not_loaded_at_import():
    code = (
        "import sys, xlang, xlang.plugins, xlang.cli;"
        "print(any(m.startswith('xlang_ko') for m in sys.modules), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_trace_switch_reports_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("XLANG_TRACE_HOOKS", "1")
    pm = plugins.make_plugin_manager()
    pm.hook.load_vit_data(uri="nothing://here", cache_dir=None)
    assert "load_vit_data" in capsys.readouterr().err
