"""Built-in behaviour, registered as plugins like any other: each module adapts stage code into hook implementations."""
