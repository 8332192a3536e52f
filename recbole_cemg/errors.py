"""User errors (a bad config value, a missing or malformed file) told apart from bugs of the plugin.

A user error ends a command-line program with one line on stderr, ``<program>: error: <message>``, and exit code 2
(as argparse does for a bad flag); the message names the key or file, what is wrong and what to do. Any other
exception is a bug and keeps its traceback. ``--debug`` (or ``state: DEBUG``) shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

DEBUG_FLAG = "--debug"
USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130

Main = TypeVar("Main", bound=Callable[..., Any])


class UserError(Exception):
    """A problem in the user's input; its message says which key or file, what is wrong and what to do."""


class InputError(UserError, ValueError):
    """A bad value or a malformed file (also a ValueError, for callers that catch those)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named by the user does not exist (also a FileNotFoundError)."""


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Declare ``--debug`` so that ``--help`` shows it; ``command_line`` acts on it."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="on a user error, show the Python traceback too")


def command_line(program: str, interrupted: str = "") -> Callable[[Main], Main]:
    """Decorator for the ``main`` of every command-line program.

    ``UserError`` -> ``<program>: error: <message>`` on stderr and exit code 2, no traceback (unless ``--debug`` or
    ``--state=DEBUG`` is among the arguments, or the root logger is at DEBUG, as RecBole sets it for a config's
    ``state: DEBUG`` once the config is read). Ctrl-C ->
    ``<program>: interrupted. <interrupted>`` and exit code 130. ``main`` may take ``argv`` as its first argument
    (``None``: ``sys.argv``); ``--debug`` is looked for there.
    """
    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            argv = args[0] if args and args[0] is not None else kwargs.get("argv") or sys.argv[1:]
            debug = DEBUG_FLAG in argv or "--state=debug" in (arg.lower() for arg in argv)
            try:
                return main(*args, **kwargs)
            except UserError as error:
                if debug or logging.getLogger().isEnabledFor(logging.DEBUG):
                    raise
                print(f"{program}: error: {error}", file=sys.stderr)
                raise SystemExit(USER_ERROR_EXIT) from None
            except KeyboardInterrupt:
                if debug:
                    raise
                print(f"{program}: interrupted. {interrupted}".rstrip(), file=sys.stderr)
                raise SystemExit(INTERRUPTED_EXIT) from None

        return wrapper  # type: ignore[return-value]

    return decorate
