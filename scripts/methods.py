"""What the sweep and the tables need to know about a trainer, asked of its registered class rather than of its
name: its declaration `SPEC` (trainers/method.py); one that declares nothing gets the defaults (every
prompt method's behaviour).

- `transfers_to_unseen` (default True): it can score classes it was not trained on (a new class
  list builds a new classifier from the class names). False (the linear probe): no base-to-novel runs, no
  cross-dataset rows; domain-generalisation targets only where their classes are its training classes.
- `config_dir`, `config_for(protocol)`: where the scripts find its configs and which one a protocol uses on
  real datasets when no CFG is given (scripts/lib.sh asks through the command line below)::

    python3 -m scripts.methods config-dir TRAINER            # configs/trainers/<its folder>
    python3 -m scripts.methods default-config PROTOCOL TRAINER
"""
from __future__ import annotations

import functools
import sys
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


def _spec(name: str):
    from trainers.method import spec_of

    cls = trainer_class(name)
    if cls is None:
        raise LookupError(f"unknown trainer {name!r}: no registered trainer has that name")
    return spec_of(cls)


def main(argv: Optional[list[str]] = None) -> int:
    """The two questions of scripts/lib.sh; a one-line error and exit status 2 when there is no answer."""
    from dassl.utils.errors import USER_ERROR_STATUS, error_line

    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) == 2 and argv[0] == "config-dir":
            print(f"configs/trainers/{_spec(argv[1]).config_dir}")
        elif len(argv) == 3 and argv[0] == "default-config":
            protocol, name = argv[1:]
            config = _spec(name).config_for(protocol)
            if not config:
                raise LookupError(f"no default config for trainer {name!r} in protocol {protocol!r} (its SPEC "
                                  f"declares none): set CFG (see configs/trainers/{_spec(name).config_dir}/)")
            print(config)
        else:
            print(__doc__)
            return USER_ERROR_STATUS
    except (LookupError, ValueError) as error:
        print(error_line("scripts.methods", error), file=sys.stderr)
        return USER_ERROR_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
