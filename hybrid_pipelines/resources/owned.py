"""A live client or connection cache owned by one resource object.

Inside Dagster a resource is built fresh for each run, sensor tick or step, and
`setup_for_execution` / `teardown_after_execution` open and close what it owns. Outside
Dagster (console commands, tests calling a resource's methods directly) nothing calls them:
the handle is then made on first use and lives as long as the resource object.

A copy of a resource (`model_copy(update=...)`, `copy`) may carry another
configuration (another password, another timeout), so it never shares or copies the handle:
it gets an empty holder and makes its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Owned(Generic[T]):
    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self, make: Callable[[], T]) -> T:
        """The handle, made by `make` if there is none yet (once, even across threads)."""
        with self._lock:
            if self._value is None:
                self._value = make()
            return self._value

    def set(self, value: T) -> None:
        with self._lock:
            self._value = value

    def take(self) -> T | None:
        """Remove and return the handle (None if none was made), for closing it."""
        with self._lock:
            value, self._value = self._value, None
            return value

    def __copy__(self) -> Owned[T]:
        return Owned()

    def __deepcopy__(self, memo: dict[int, Any]) -> Owned[T]:
        return Owned()

    def __repr__(self) -> str:  # never the handle itself: it may hold credentials
        return f"Owned({'set' if self._value is not None else 'empty'})"


class OwnsHandles:
    """Mixin for resources with `Owned` private attributes: a shallow copy of the resource
    (pydantic's `model_copy`) gets fresh holders instead of sharing the original's handle.
    (A deep copy would get empty holders from `Owned.__deepcopy__`, though Dagster's
    resources cannot be deep-copied anyway.)"""

    def __copy__(self) -> Any:
        copied = super().__copy__()  # type: ignore[misc]
        private = getattr(copied, "__pydantic_private__", None)
        if private:
            object.__setattr__(copied, "__pydantic_private__", {
                k: Owned() if isinstance(v, Owned) else v for k, v in private.items()})
        return copied
