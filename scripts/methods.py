"""What the sweep and the tables need to know about a trainer, asked of its registered class rather than of its
name: its declaration `SPEC` (trainers/method.py); one that declares nothing gets the defaults (every
prompt method's behaviour).

- `transfers_to_unseen` (default True): it can score classes it was not trained on (a new class
  list builds a new classifier from the class names). False (the linear probe): no base-to-novel runs, no
  cross-dataset rows; domain-generalisation targets only where their classes are its training classes.
"""
from __future__ import annotations

import functools
from typing import Optional


@functools.lru_cache(maxsize=None)
def trainer_class(name: str) -> Optional[type]:
    """The registered class of `name` (importing the project's trainers registers them), or None for a name
    the registry does not hold (a trainer of another repository, registered only in its own runs)."""
    import trainers  # noqa: F401  (registers every trainer)
    from dassl.engine import TRAINER_REGISTRY

    return TRAINER_REGISTRY.get(name) if name in TRAINER_REGISTRY.registered_names() else None


def transfers_to_unseen_classes(name: str) -> bool:
    from trainers.method import spec_of

    cls = trainer_class(name)
    return cls is None or spec_of(cls).transfers_to_unseen
