"""The one codec: JSON encoders and decoders, built once."""

from __future__ import annotations

from typing import Any, cast

import msgspec

from .errors import MalformedEventError
from .events import Event

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """Serialise an event to its wire form (JSON, with its ``type`` tag)."""
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    """Parse a wire event; MalformedEventError names what is wrong."""
    try:
        return cast(Event, _event_decoder.decode(data))
    except msgspec.DecodeError as exc:
        raise MalformedEventError(str(exc)) from exc


def encode_json(value: Any) -> bytes:
    """JSON for anything msgspec can encode (structs, dicts, datetimes)."""
    return _encoder.encode(value)


def to_builtins(value: Any) -> Any:
    """Plain dicts/lists/strings for a struct, e.g. to embed in an API response."""
    return msgspec.to_builtins(value)
