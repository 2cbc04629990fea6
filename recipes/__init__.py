"""First-party recipes and the commands (stage commands, `xlang serve`, `xlang data`), registered through the
hooks like any plugin's."""

from typing import Any

from xlang import hookimpl


@hookimpl
def register_recipes(register: Any) -> None:
    from xlang_recipes.ab import X_LLAVA_AB
    from xlang_recipes.x_llava import X_LLAVA

    register(X_LLAVA)
    register(X_LLAVA_AB)


@hookimpl
def register_commands(cli: Any) -> None:
    from xlang_recipes.commands import add_commands
    from xlang_recipes.datagen_commands import add_data_commands
    from xlang_recipes.eval_commands import add_eval_commands
    from xlang_recipes.serve_command import add_serve_command

    add_commands(cli)
    add_serve_command(cli)
    add_data_commands(cli)
    add_eval_commands()
