"""How a command ends badly: the exit statuses, `Failure` (raised by a command's work) and
`fail` (for a typer callback, before any work starts)."""

from typing import NoReturn

import typer

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130


class Failure(Exception):
    """Ends a command: `message` goes to stderr, `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)
