"""Strict reading of OpenAI client events, failing the way the OpenAI Realtime API does.

Every refusal is a CompatError with OpenAI's error `code` (`invalid_value`, `invalid_type`,
`missing_required_parameter`, `unknown_parameter`, ...), a message in OpenAI's wording, and `param`,
the dotted path of the field to blame. Pure functions: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_MISSING: Any = object()


class CompatError(Exception):
    """A client event we refuse, as an OpenAI error: `type`, `code`, `message`, `param`."""

    def __init__(self, code: str, message: str, param: str | None = None, *, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.kind = kind


def type_name(value: object) -> str:
    """JSON type names as OpenAI's messages use them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "value"


def invalid_type(param: str, expected: str, value: object) -> CompatError:
    article = "an" if expected[0] in "aeiou" else "a"
    got = type_name(value)
    got_article = "an" if got[0] in "aeiou" else "a"
    return CompatError(
        "invalid_type",
        f"Invalid type for '{param}': expected {article} {expected}, but got {got_article} {got} instead.",
        param,
    )


def invalid_value(param: str, value: object, allowed: str | None = None) -> CompatError:
    shown = repr(value) if isinstance(value, str) else str(value)
    message = f"Invalid value: {shown[:80]}."
    if allowed:
        message += f" {allowed}"
    return CompatError("invalid_value", message, param)


def unsupported(param: str, what: str) -> CompatError:
    """A valid OpenAI value this server does not implement (documented in docs/openai-compat.md)."""
    return CompatError("unsupported_value", f"{what} is not supported by this server.", param)


class Obj:
    """A view of one JSON object at `path`; `done()` refuses fields nobody read (OpenAI's unknown_parameter)."""

    __slots__ = ("data", "path", "_seen")

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path
        self._seen: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, *, required: bool = False) -> Any:
        self._seen.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING and required:
            name = self.name(key)
            raise CompatError("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
        return value

    def ignore(self, *keys: str) -> None:
        """Fields accepted and ignored (documented)."""
        self._seen.update(keys)

    def text(
        self, key: str, *, required: bool = False, nullable: bool = False, choices: tuple[str, ...] | None = None
    ) -> Any:
        value = self.raw(key, required=required)
        if value is _MISSING or (value is None and nullable):
            return value
        if not isinstance(value, str):
            raise invalid_type(self.name(key), "string", value)
        if choices is not None and value not in choices:
            allowed = "Supported values are: " + ", ".join(f"'{c}'" for c in choices) + "."
            raise invalid_value(self.name(key), value, allowed)
        return value

    def integer(self, key: str, *, minimum: int, maximum: int, nullable: bool = False) -> Any:
        value = self.raw(key)
        if value is _MISSING or (value is None and nullable):
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_type(self.name(key), "integer", value)
        if not minimum <= value <= maximum:
            name = self.name(key)
            raise CompatError(
                "integer_below_min_value" if value < minimum else "integer_above_max_value",
                f"Invalid '{name}': integer must be between {minimum} and {maximum}, got {value}.",
                name,
            )
        return value

    def number(self, key: str, *, minimum: float, maximum: float, nullable: bool = False) -> Any:
        value = self.raw(key)
        if value is _MISSING or (value is None and nullable):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise invalid_type(self.name(key), "number", value)
        if not minimum <= value <= maximum:
            name = self.name(key)
            raise CompatError(
                "decimal_below_min_value" if value < minimum else "decimal_above_max_value",
                f"Invalid '{name}': number must be between {minimum} and {maximum}, got {value}.",
                name,
            )
        return float(value)

    def flag(self, key: str, *, nullable: bool = False) -> Any:
        value = self.raw(key)
        if value is _MISSING or (value is None and nullable):
            return value
        if not isinstance(value, bool):
            raise invalid_type(self.name(key), "boolean", value)
        return value

    def obj(self, key: str, *, required: bool = False, nullable: bool = False) -> Any:
        """A sub-object view, None for an allowed null, or _MISSING."""
        value = self.raw(key, required=required)
        if value is _MISSING or (value is None and nullable):
            return value
        if not isinstance(value, Mapping):
            raise invalid_type(self.name(key), "object", value)
        return Obj(value, self.name(key))

    def objects(self, key: str, *, required: bool = False) -> Any:
        """A list of sub-object views, or _MISSING."""
        value = self.raw(key, required=required)
        if value is _MISSING:
            return value
        if not isinstance(value, list):
            raise invalid_type(self.name(key), "array", value)
        out = []
        for i, item in enumerate(value):
            name = f"{self.name(key)}[{i}]"
            if not isinstance(item, Mapping):
                raise invalid_type(name, "object", item)
            out.append(Obj(item, name))
        return out

    def done(self) -> None:
        for key in self.data:
            if key not in self._seen:
                name = self.name(str(key))
                raise CompatError("unknown_parameter", f"Unknown parameter: '{name}'.", name)


MISSING = _MISSING


def present(value: Any) -> bool:
    return value is not _MISSING
