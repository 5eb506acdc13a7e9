"""Device kinds: pure decoders (and encoders) from bytes or payloads to `Reading`s, and their registry."""

from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["DecodeContext", "DecodeError", "Reading"]
