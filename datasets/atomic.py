"""Atomic file writes: the content goes to a temporary file in the target folder, which then replaces the
target in one `os.replace`. A crash or a second process reading at the same time never sees half a file
(several seeds of one dataset are often started at once and race to write the same caches)."""
import json
import os
import pickle
import tempfile
from typing import Any


def write_bytes_atomic(path: str, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` (creating the parent folder) so that readers see the old file or the new one.

    `durable` also flushes the data to disk before the rename (survives a power cut); files whose integrity
    is checked otherwise (the demo images, against their manifest) skip that cost.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_json_atomic(obj: Any, path: str) -> None:
    """JSON in Dassl's `write_json` layout (4-space indent, `(",", ": ")` separators), written atomically."""
    text = json.dumps(obj, indent=4, separators=(",", ": "))
    write_bytes_atomic(path, text.encode("utf-8"))


def write_pickle_atomic(obj: Any, path: str) -> None:
    """Pickle with the highest protocol (as the official few-shot caches), written atomically."""
    write_bytes_atomic(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def read_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)
