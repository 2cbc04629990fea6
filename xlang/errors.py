"""The one error type users see: a message that names the input and the fix, and an exit status."""

from __future__ import annotations


class XlangError(Exception):
    """Bad input or a missing asset. The CLI prints the message alone and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
