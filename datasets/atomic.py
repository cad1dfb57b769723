"""Atomic writes for the dataset caches (split files, few-shot pickles, the generated demo set), through the
project's one mechanism in `dassl.utils.atomic`: several seeds of one dataset are often started at once and
race to write the same caches, and a crash must never leave half a cache that a later run trusts."""
import pickle
from typing import Any

from dassl.utils.atomic import write_bytes_atomic, write_json_atomic

__all__ = ["write_bytes_atomic", "write_json_atomic", "write_pickle_atomic", "read_pickle"]


def write_pickle_atomic(obj: Any, path: str) -> None:
    """Pickle with the highest protocol (as the official few-shot caches), written atomically."""
    write_bytes_atomic(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def read_pickle(path: str) -> Any:
    """Load a cache pickle; a damaged one (not written by us: ours are atomic) raises ValueError naming it."""
    with open(path, "rb") as f:
        try:
            return pickle.load(f)
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError) as e:
            raise ValueError(
                f'Cache file "{path}" is damaged ({type(e).__name__}: {e}); delete it and it is rebuilt on the next run'
            ) from e
