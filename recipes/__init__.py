"""First-party recipes and the stage commands, registered through the hooks like any plugin's."""

from typing import Any

from xlang import hookimpl


@hookimpl
def register_recipes(register: Any) -> None:
    from xlang_recipes.x_llava import X_LLAVA

    register(X_LLAVA)


@hookimpl
def register_commands(cli: Any) -> None:
    from xlang_recipes.commands import add_commands

    add_commands(cli)
