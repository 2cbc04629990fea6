"""First-party recipes, registered through the `register_recipes` hook like any plugin's."""
