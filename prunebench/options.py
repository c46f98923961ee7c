"""A method's hyper-parameters, declared once as typed dataclass fields and checked once.

A method declares each option as a field whose type hint is its type and, where it has one, its
accepted range or choices::

    @dataclass
    class KCP(Method):
        n_clusters: int = option(8, within="[1, inf)")
        group: str = option("input_channel", choices=("input_channel", "layer_kmeans"))

:class:`prunebench.method.Method` calls :func:`check_options` when a method is built, so a new
method gets the checks for free, and a bad value is one :class:`ConfigError` naming the key, the
value and what is accepted (``method.n_clusters=0: must be an integer in [1, inf)``). Fields whose
name starts with ``_`` are a method's own state, not options.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

from prunebench.errors import ConfigError

_INTERVAL = re.compile(r"^([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])$")
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def option(default: Any, *, within: str | None = None, choices: Sequence[Any] | None = None) -> Any:
    """A method option: a dataclass field with its accepted interval (``"(0, 1]"``, ``"[1, inf)"``;
    brackets include the end) or its choices."""
    if within is not None and not _INTERVAL.match(within):
        raise ValueError(f"interval {within!r}: write it as (a, b], [a, inf), …")
    meta = {"within": within, "choices": tuple(choices) if choices is not None else None}
    return dataclasses.field(default=default, metadata=meta)


def in_interval(value: float, within: str) -> bool:
    """Whether ``value`` lies in ``within`` (NaN lies in none)."""
    opening, low, high, closing = _INTERVAL.match(within).groups()  # type: ignore[union-attr]
    lo, hi = float(low), float(high)
    if math.isnan(value):
        return False
    above = value >= lo if opening == "[" else value > lo
    below = value <= hi if closing == "]" else value < hi
    return above and below


def _types(hint: Any) -> tuple[tuple[type, ...], bool]:
    """(accepted types, None allowed) for a field's type hint (``float``, ``int | None``, …)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        kept = tuple(typing.get_origin(a) or a for a in args if a is not type(None))
        return kept, type(None) in args
    return (typing.get_origin(hint) or hint,), False


def _type_ok(value: Any, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # bool is an int to Python, not to a config
        return bool in accepted
    if isinstance(value, int) and float in accepted:
        return True
    return isinstance(value, accepted)


def check_options(obj: Any, prefix: str = "method") -> None:
    """Raise :class:`ConfigError` for the first option of the dataclass ``obj`` whose value has
    the wrong type, lies outside its interval or is not one of its choices."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name.startswith("_"):
            continue
        value, key = getattr(obj, f.name), f"{prefix}.{f.name}"
        accepted, none_ok = _types(hints[f.name])
        within, choices = f.metadata.get("within"), f.metadata.get("choices")
        if value is None and none_ok:
            continue
        if choices is not None:
            if value not in choices or not _type_ok(value, accepted):
                listed = ", ".join(repr(c) for c in choices)
                raise ConfigError(f"{key}={value!r}; choices: {listed}")
            continue
        words = ("null or " if none_ok else "") + " or ".join(
            _TYPE_WORDS.get(t, t.__name__) for t in accepted
        )
        if not _type_ok(value, accepted) or (within and not in_interval(value, within)):
            where = f" in {within}" if within else ""
            raise ConfigError(f"{key}={value!r}: must be {words}{where}")
