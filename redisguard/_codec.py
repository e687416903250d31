"""How ``redisguard.cache`` turns values into the bytes it stores in Redis, and back.

Three built-in serializers, chosen by name, or any object with ``dumps``/``loads``:

``"json"`` (the default)
    compact JSON, UTF-8. Safe to read whatever wrote it. ``NaN``/``Infinity`` are refused (other
    JSON readers reject them), as are bytes, sets and other objects JSON cannot express.
``"bytes"``
    the function returns ``bytes``; they are stored and returned untouched (no tag, no
    framing), so other readers of the key see exactly those bytes.
``"pickle"``
    any picklable value. **Unsafe for data others can write**: unpickling runs code chosen by
    whoever wrote the bytes, so use it only when nobody but your own services can write to
    this Redis (or to keys under this prefix).
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Literal, Protocol, runtime_checkable

from ._errors import ConfigError

__all__ = ["BUILTIN", "Serializer", "resolve_serializer"]


@runtime_checkable
class Serializer(Protocol):
    """A custom serializer: ``dumps`` raises TypeError/ValueError for a value it cannot store;
    ``loads`` raises ValueError (or any Exception) for bytes it cannot read."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """Compact JSON, UTF-8; strict (no NaN, no bytes)."""

    name = "json"
    _encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    _decode = staticmethod(json.loads)

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            raise TypeError("bytes are not JSON; serializer='bytes' stores them untouched")
        return self._encoder.encode(value).encode()

    def loads(self, data: bytes) -> Any:
        return self._decode(data)


class BytesSerializer:
    """bytes in, the same bytes out."""

    name = "bytes"

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise TypeError(f"serializer='bytes' stores bytes only, got {type(value).__name__}")

    def loads(self, data: bytes) -> Any:
        return data


class PickleSerializer:
    """pickle, highest protocol. Unsafe for data others can write (see the module docstring)."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError) as exc:  # local objects, lambdas...
            raise TypeError(str(exc)) from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # opt-in, documented as unsafe


BUILTIN: dict[str, Serializer] = {
    "json": JsonSerializer(),
    "bytes": BytesSerializer(),
    "pickle": PickleSerializer(),
}
SerializerName = Literal["json", "bytes", "pickle"]


def resolve_serializer(serializer: SerializerName | Serializer) -> Serializer:
    """A built-in serializer by name, or ``serializer`` itself if it has dumps/loads."""
    if isinstance(serializer, str):
        found = BUILTIN.get(serializer)
        if found is None:
            raise ConfigError(
                f"serializer must be 'json', 'bytes', 'pickle' or an object with dumps/loads, "
                f"got {serializer!r}"
            )
        return found
    if isinstance(serializer, Serializer):
        return serializer
    raise ConfigError(
        f"serializer must be 'json', 'bytes', 'pickle' or an object with dumps/loads, "
        f"got {serializer!r}"
    )
