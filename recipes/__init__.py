"""First-party recipes, registered through the `register_recipes` hook like any plugin's."""

from xlang import hookimpl


@hookimpl
def register_recipes(register):
    from xlang_recipes.x_llava import X_LLAVA

    register(X_LLAVA)
