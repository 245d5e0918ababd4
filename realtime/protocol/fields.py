"""Typed, strict access to a decoded map; every failure names the field's path for the client.

Unknown fields are refused (as the OpenAI Realtime API does), so a typo is an error, not a silent no-op.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

from realtime.errors import InvalidMessage, MessageTooLarge

_MISSING = object()


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "binary"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "unsupported value"


def _is_utf8_safe(text: str) -> bool:
    """False for strings holding lone surrogates (JSON allows "\\ud800"; UTF-8 and msgpack do not)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_text(text: str, limit: int = 64) -> str:
    """A client-supplied string made safe to echo in an error message: bounded and encodable."""
    short = text if len(text) <= limit else text[:limit] + "..."
    return short.encode("utf-8", "backslashreplace").decode("utf-8")


class Fields:
    """A view of one decoded object. `path` prefixes field names in errors ("item.content[0].text")."""

    __slots__ = ("_data", "_path", "_base64", "_used")

    def __init__(self, data: Mapping[Any, Any], path: str = "", *, base64_binary: bool = False) -> None:
        self._data = data
        self._path = path
        self._base64 = base64_binary
        self._used: set[str] = set()

    def path(self, key: str) -> str:
        """The full path of a field, as errors name it."""
        return f"{self._path}.{key}" if self._path else key

    _name = path

    def _get(self, key: str, required: bool) -> Any:
        self._used.add(key)
        value = self._data.get(key, _MISSING)
        if value is _MISSING and required:
            raise InvalidMessage(f"missing required field '{self._name(key)}'", param=self._name(key))
        return value

    def _wrong(self, key: str, expected: str, value: object) -> InvalidMessage:
        name = self._name(key)
        return InvalidMessage(f"'{name}' must be {expected}, got {_type_name(value)}", param=name)

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        return self._data.get(key)

    def mark(self, key: str) -> None:
        """Count a field as read (for `done`) without converting it."""
        self._used.add(key)

    def str(
        self,
        key: str,
        *,
        required: bool = True,
        max_len: int | None = None,
        choices: frozenset[str] | None = None,
        nullable: bool = False,
        default: Any = None,
    ) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        if not _is_utf8_safe(value):
            raise InvalidMessage(f"'{self._name(key)}' is not valid Unicode text", param=self._name(key))
        if max_len is not None and len(value) > max_len:
            raise MessageTooLarge(f"'{self._name(key)}' is longer than {max_len} characters", param=self._name(key))
        if choices is not None and value not in choices:
            allowed = ", ".join(sorted(choices))
            raise InvalidMessage(f"'{self._name(key)}' must be one of: {allowed}", param=self._name(key))
        return value

    def int(
        self,
        key: str,
        *,
        required: bool = True,
        minimum: int | None = None,
        maximum: int | None = None,
        nullable: bool = False,
        default: Any = None,
    ) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer", value)
        self._check_range(key, value, minimum, maximum)
        return value

    def float(
        self,
        key: str,
        *,
        required: bool = True,
        minimum: float | None = None,
        maximum: float | None = None,
        nullable: bool = False,
        default: Any = None,
    ) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, "a finite number", value)
        try:
            number = float(value)  # JSON integers are unbounded: 10**400 does not fit a float
        except OverflowError:
            raise self._wrong(key, "a finite number", value) from None
        if not math.isfinite(number):
            raise self._wrong(key, "a finite number", value)
        self._check_range(key, value, minimum, maximum)
        return number

    def bool(self, key: str, *, required: bool = True, nullable: bool = False, default: Any = None) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean", value)
        return value

    def binary(self, key: str, *, max_size: int, required: bool = True) -> Any:
        """Raw bytes in msgpack; a base64 string in JSON mode."""
        value = self._get(key, required)
        if value is _MISSING:
            return None
        if self._base64:
            if not isinstance(value, str):
                raise self._wrong(key, "a base64 string", value)
            if len(value) > (max_size * 4) // 3 + 4:
                raise MessageTooLarge(f"'{self._name(key)}' is larger than {max_size} bytes", param=self._name(key))
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidMessage(f"'{self._name(key)}' is not valid base64", param=self._name(key)) from exc
        elif not isinstance(value, bytes):
            raise self._wrong(key, "binary data", value)
        if len(value) > max_size:
            raise MessageTooLarge(f"'{self._name(key)}' is larger than {max_size} bytes", param=self._name(key))
        return value

    def obj(self, key: str, *, required: bool = True) -> Fields | None:
        value = self._get(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, Mapping):
            raise self._wrong(key, "an object", value)
        return Fields(value, self._name(key), base64_binary=self._base64)

    def objects(self, key: str, *, max_items: int, min_items: int = 0) -> list[Fields]:
        value = self._get(key, True)
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        if len(value) > max_items:
            raise MessageTooLarge(f"'{self._name(key)}' has more than {max_items} items", param=self._name(key))
        if len(value) < min_items:
            raise InvalidMessage(f"'{self._name(key)}' needs at least {min_items} item(s)", param=self._name(key))
        out = []
        for i, item in enumerate(value):
            name = f"{self._name(key)}[{i}]"
            if not isinstance(item, Mapping):
                raise InvalidMessage(f"'{name}' must be an object, got {_type_name(item)}", param=name)
            out.append(Fields(item, name, base64_binary=self._base64))
        return out

    def done(self) -> None:
        """Refuse fields nobody asked for."""
        for key in self._data:
            if key not in self._used:
                name = self._name(safe_text(key if isinstance(key, str) else repr(key)))
                raise InvalidMessage(f"unknown field '{name}'", param=name)

    def _check_range(self, key: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            lo = "-inf" if minimum is None else minimum
            hi = "inf" if maximum is None else maximum
            raise InvalidMessage(f"'{self._name(key)}' must be within [{lo}, {hi}]", param=self._name(key))
