"""xlang: teach an existing LLM or LLaVA-style model a new language.

Import stays light (no torch): the heavy libraries load inside the stages that need them.
"""

from xlang.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
