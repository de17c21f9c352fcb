"""Name → class registries for models and losses.

Adding a model or a loss is adding one decorated class; configs refer to them by name.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def first_docstring_line(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, joined into one line."""
    doc = (inspect.getdoc(obj) or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


class Registry(Generic[T]):
    """A named collection of classes, with builds that validate their arguments."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} name {name!r} is already registered to {self._entries[name]!r}")
            self._entries[name] = cls
            cls.registered_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> type[T]:
        if not isinstance(name, str) or name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            plural = f"{self.kind}es" if self.kind.endswith("s") else f"{self.kind}s"
            raise ValueError(f"unknown {self.kind} {name!r}.{hint} Known {plural}: {', '.join(self.names())}")
        return self._entries[name]

    def describe(self, name: str) -> str:
        return first_docstring_line(self.get(name))

    def build(self, name: str, **params: Any) -> T:
        cls = self.get(name)
        accepted = accepted_parameters(cls)
        unknown = sorted(set(params) - set(accepted))
        if unknown and not accepts_var_keywords(cls):
            raise ValueError(
                f"{self.kind} {name!r} got unknown parameter(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(accepted) or '(none)'}"
            )
        return cls(**params)


def accepted_parameters(cls: type) -> list[str]:
    signature = inspect.signature(cls.__init__)
    return [
        p.name
        for p in signature.parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def accepts_var_keywords(cls: type) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
