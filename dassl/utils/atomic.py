"""Atomic file writes, the one mechanism every checkpoint, cache, generated file and result table goes through.

The content is written to a hidden temporary file in the target folder and then moved over the target with
one `os.replace`: a reader (or a run restarted after a crash) sees the old file or the complete new one, never
half a file. A process killed before the rename leaves only the hidden temporary file (`.<name>.<random>.tmp`),
which no reader trusts and `remove_stale_temp_files` clears.

Test hook: when the environment variable `DASSL_KILL_BEFORE_RENAME` equals the target's file name (e.g.
`model.pth.tar-2`), the process SIGKILLs itself after the temporary file is complete and before the rename —
the worst moment for a crash. Nothing else reads it; leave it unset outside tests.
"""
import json
import os
import signal
import tempfile
from typing import Any, BinaryIO, Callable

KILL_HOOK_ENV = "DASSL_KILL_BEFORE_RENAME"
TEMP_SUFFIX = ".tmp"


def atomic_write(path: str, write: Callable[[BinaryIO], None], durable: bool = True) -> None:
    """Call `write(f)` on a temporary file next to `path` (creating the folder), then rename it to `path`.

    `durable` fsyncs the data before the rename, so the new file also survives a power cut; files whose
    integrity is checked another way (the demo images, against their manifest) may skip that cost.
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=TEMP_SUFFIX)
    except OSError as error:
        raise _naming(error, path) from error
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would (0666 minus the
        # umask), so caches in a shared data root stay readable by the other users of that root.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if os.environ.get(KILL_HOOK_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp_path, path)
    except BaseException as error:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        if isinstance(error, OSError) and error.errno is not None:
            raise _naming(error, path) from error
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _naming(error: OSError, path: str) -> OSError:
    # e.g. a full disk or an unwritable folder: say which file, and that its previous version is untouched;
    # OSError(errno, ...) keeps the specific subclass (PermissionError, NotADirectoryError, ...)
    return OSError(error.errno, f'Cannot write "{path}" ({error.strerror}); its previous version, if any, is unchanged')


def write_bytes_atomic(path: str, data: bytes, durable: bool = True) -> None:
    atomic_write(path, lambda f: f.write(data), durable)


def write_text_atomic(path: str, text: str, durable: bool = True) -> None:
    """UTF-8 text, newlines written as given."""
    write_bytes_atomic(path, text.encode("utf-8"), durable)


def write_json_atomic(obj: Any, path: str) -> None:
    """JSON in Dassl's `write_json` layout (4-space indent, `(",", ": ")` separators)."""
    write_text_atomic(path, json.dumps(obj, indent=4, separators=(",", ": ")))


def remove_stale_temp_files(folder: str) -> None:
    """Delete the temporary files that killed writers left in `folder` (only call this while no other process
    writes there, e.g. when a run resumes in its own output folder)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            os.remove(os.path.join(folder, name))
