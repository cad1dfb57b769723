"""Name -> class maps that let a config string pick a trainer, dataset or evaluator."""
import difflib
from typing import Any, Callable, Iterable, Optional


def get_most_similar_str_to_a_from_b(a: str, b: Iterable[str]) -> str:
    """The string of `b` most similar to `a` (difflib ratio); "" when `b` is empty."""
    best, best_ratio = "", -1.0
    for candidate in b:
        ratio = difflib.SequenceMatcher(None, a, candidate).ratio()
        if ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best


def check_availability(requested: str, available: Iterable[str]) -> None:
    """Raise ValueError naming the valid choices (and the closest one) if `requested` is not among them."""
    available = list(available)
    if requested not in available:
        closest = get_most_similar_str_to_a_from_b(requested, available)
        raise ValueError(
            f"The requested one is expected to belong to {sorted(available)}, but got [{requested}]"
            f" (do you mean [{closest}]?)"
        )


class Registry:
    """Objects registered under their `__name__`, e.g. `@TRAINER_REGISTRY.register()` on a class.

    Registering a taken name raises a KeyError, unless `duplicate_handler(registry, name, old, new)` is set:
    then it decides (returns to let `new` replace `old`, or raises). train.py's --import sets it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: dict = {}
        self.duplicate_handler: Optional[Callable[["Registry", str, Any, Any], None]] = None

    @property
    def name(self) -> str:
        return self._name

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        if name in self._obj_map and not force:
            if self.duplicate_handler is None:
                raise KeyError(
                    f'An object named "{name}" was already registered in the "{self._name}" registry'
                    " (pass force=True to replace it)"
                )
            self.duplicate_handler(self, name, self._obj_map[name], obj)
        self._obj_map[name] = obj

    def register(self, obj: Any = None, force: bool = False) -> Optional[Callable[[Any], Any]]:
        """Use as `@registry.register()` (returns a decorator) or call `registry.register(obj)` directly."""
        if obj is None:

            def decorator(cls: Any) -> Any:
                self._do_register(cls.__name__, cls, force=force)
                return cls

            return decorator
        self._do_register(obj.__name__, obj, force=force)
        return None

    def get(self, name: str) -> Any:
        if name not in self._obj_map:
            raise KeyError(
                f'Object name "{name}" does not exist in the "{self._name}" registry;'
                f" registered names: {sorted(self._obj_map)}"
            )
        return self._obj_map[name]

    def registered_names(self) -> list:
        return list(self._obj_map.keys())

    def items(self) -> list:
        """(name, object) pairs in registration order."""
        return list(self._obj_map.items())

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def __repr__(self) -> str:
        return f"Registry(name={self._name!r}, names={self.registered_names()})"
