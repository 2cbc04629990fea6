"""builtin stage."""
