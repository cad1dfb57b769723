"""One error style for every command of the project (train.py, predict.py, python -m datasets.check, the
scripts' Python helpers): an error the user can fix ends the process with one line

    <program>: error: <what, where, what to do>

and a non-zero exit status, without a traceback; any other exception is a bug and keeps its traceback.
Setting the environment variable PROMPTCLIP_TRACEBACK=1 shows the traceback of user errors too.

What counts as a user error: every `UserError` (the project's own error types derive from it, next to the
built-in type they always had, so `except ValueError` callers keep working) and `OSError` (a file or folder
that is missing, unreadable, unwritable or full: the project's messages name the path).
"""
import os
import sys
import traceback
from typing import Callable, Optional, TypeVar

# Set to 1 to see the traceback of every error, user errors included (for debugging and bug reports).
TRACEBACK_ENV = "PROMPTCLIP_TRACEBACK"
# Exit status of a user error; argparse uses the same for a bad command line.
USER_ERROR_STATUS = 2

T = TypeVar("T")


class UserError(Exception):
    """An input the user can correct; the message names the input and the fix. Subclass it (together with the
    built-in type a caller would expect, e.g. `class ConfigError(UserError, ValueError)`) for a new kind."""


class UsageError(UserError, ValueError):
    """A command-line flag or combination of flags that cannot work (e.g. a flag that does nothing in this mode)."""


class InputError(UserError, ValueError):
    """A value, file or API argument the user gave that does not fit (wrong shape or content, a checkpoint of
    another model); the message names it."""


class InputTypeError(UserError, TypeError):
    """An API argument of the wrong type; the message names the argument, the type given and the types taken."""


def is_user_error(error: BaseException) -> bool:
    return isinstance(error, (UserError, OSError))


def one_line(message: str) -> str:
    """The message with its lines joined, so the error stays one line however it was composed."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def error_line(program: str, error: BaseException) -> str:
    return f"{program}: error: {one_line(str(error)) or type(error).__name__}"


def run_command(program: str, command: Callable[[], T]) -> T:
    """Call `command()`; a user error ends the process with its one line on stderr and exit status 2, unless
    PROMPTCLIP_TRACEBACK=1 asks for the traceback. Anything else propagates with its traceback."""
    try:
        return command()
    except Exception as error:  # noqa: BLE001 — classified below, re-raised unless it is the user's to fix
        if not is_user_error(error):
            raise
        if show_tracebacks():
            traceback.print_exc()
        print(error_line(program, error), file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)


def show_tracebacks(environ: Optional[dict] = None) -> bool:
    return (os.environ if environ is None else environ).get(TRACEBACK_ENV, "") not in ("", "0")
