"""The users table's codecs, as Faust codecs: the state as stream.codecs
encodes it, and user ids as UTF-8."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from stream.codecs import decode_state, encode_state


class StateCodec(codecs.Codec):
    """Faust codec so the users table's changelog holds `encode_state` bytes."""

    def _dumps(self, obj: Any) -> bytes:
        return encode_state(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_state(s)


class Utf8Codec(codecs.Codec):
    """Keys are user ids: str in memory, UTF-8 on the wire, both ways."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode()


def register() -> None:
    """Make 'tierstate' and 'utf8' known to Faust (idempotent)."""
    codecs.register("tierstate", StateCodec())
    codecs.register("utf8", Utf8Codec())
