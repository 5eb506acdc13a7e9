"""Stream framing shared by serial devices: find a header, wait for the whole frame, resynchronise on bad data."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from devices.reading import DecodeError

__all__ = ["StreamFramer"]


class StreamFramer:
    """Frames of a fixed header whose length is known from the first bytes; a bad frame costs one byte.

    `length_of(prefix)` returns the whole frame length from the first `prefix_len` bytes (or None when those
    bytes cannot start a frame). `check(frame)` returns None when the frame's checksum is right, else the
    reason. A frame failing its check is reported and the scan restarts one byte later, so a cut frame
    followed by a good one loses only the cut one.
    """

    def __init__(
        self,
        header: bytes,
        prefix_len: int,
        length_of: Callable[[bytes], int | None],
        check: Callable[[bytes], str | None],
        max_buffer: int = 4096,
    ) -> None:
        self._header = header
        self._prefix_len = prefix_len
        self._length_of = length_of
        self._check = check
        self._max_buffer = max_buffer
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes | DecodeError]:
        """Consume `data`; yield each complete good frame, and a DecodeError for each rejected span."""
        self._buf += data
        buf = self._buf
        while True:
            start = buf.find(self._header)
            if start < 0:
                # Keep a possible partial header at the end; everything before it is garbage.
                keep = len(self._header) - 1
                if len(buf) > keep:
                    garbage = bytes(buf[: len(buf) - keep])
                    del buf[: len(buf) - keep]
                    if garbage:
                        yield DecodeError("garbage bytes before frame header skipped", garbage)
                return
            if start > 0:
                garbage = bytes(buf[:start])
                del buf[:start]
                yield DecodeError("garbage bytes before frame header skipped", garbage)
            if len(buf) < self._prefix_len:
                return
            length = self._length_of(bytes(buf[: self._prefix_len]))
            if length is None:
                bad = bytes(buf[: self._prefix_len])
                del buf[:1]
                yield DecodeError("invalid frame length field", bad)
                continue
            if len(buf) < length:
                if len(buf) > self._max_buffer:
                    del buf[:1]
                return
            frame = bytes(buf[:length])
            reason = self._check(frame)
            if reason is None:
                del buf[:length]
                yield frame
            else:
                del buf[:1]
                yield DecodeError(reason, frame)
