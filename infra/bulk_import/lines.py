"""The lines of an upload, read in fixed-size chunks so memory stays flat however large it is."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Protocol

CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20  # a row is a few hundred bytes; a 1 MiB line is a broken file


class ByteStream(Protocol):
    """What a ``LineReader`` reads: any binary stream, or a wrapper that has its ``read``."""

    def read(self, size: int = -1, /) -> bytes: ...


class ImportTooLarge(Exception):
    """The body grew past the import size limit while being read."""


class LineReader:
    """The lines of a UTF-8 byte stream, read ``chunk_bytes`` at a time.

    Iterating yields each line as text including its ``\\n`` (the last may lack it). A line
    that is not valid UTF-8, or is longer than ``max_line_bytes`` (its bytes are skipped, not
    held), is yielded as a blank line and recorded in ``bad_lines`` (line number → why), so
    the parser can report it. Raises ImportTooLarge once more than ``max_bytes`` have been
    read. A leading byte-order mark is dropped. Only ``\\n`` ends a line, so line numbers
    match what an editor shows for LF and CRLF files alike.
    """

    def __init__(
        self,
        stream: ByteStream,
        *,
        max_bytes: int,
        chunk_bytes: int = CHUNK_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        if chunk_bytes > max_line_bytes:
            raise ValueError("chunk_bytes may not exceed max_line_bytes")
        self._stream = stream
        self.max_bytes = max_bytes
        self._chunk_bytes = chunk_bytes
        self._max_line_bytes = max_line_bytes
        self.bytes_read = 0
        self.bad_lines: dict[int, str] = {}
        self._lines = 0  # lines yielded so far

    def _chunks(self) -> Iterator[bytes]:
        first = True
        while True:
            chunk = self._stream.read(self._chunk_bytes)
            if not chunk:
                return
            while first and len(chunk) < 3:  # a short first read must not split a byte-order mark
                more = self._stream.read(self._chunk_bytes)
                if not more:
                    break
                chunk += more
            if first and chunk.startswith(b"\xef\xbb\xbf"):
                self.bytes_read += 3
                chunk = chunk[3:]
            first = False
            self.bytes_read += len(chunk)
            if self.bytes_read > self.max_bytes:
                raise ImportTooLarge(f"the upload is larger than {self.max_bytes} bytes")
            yield chunk

    def _bad(self, error: str) -> str:
        self._lines += 1
        self.bad_lines[self._lines] = error
        return "\n"

    def __iter__(self) -> Iterator[str]:
        too_long = f"line is longer than {self._max_line_bytes} bytes"
        limit = self._max_line_bytes
        pending = b""  # the start of a line whose end has not arrived yet (at most ``limit``)
        skipping = False  # inside an over-long line, dropping bytes up to its end
        for chunk in self._chunks():
            end = chunk.rfind(b"\n")
            if end < 0:
                if not skipping:
                    pending += chunk
                    if len(pending) > limit:
                        pending, skipping = b"", True
                continue
            # Only the line running into this chunk can be over-long: every other line of the
            # block lies inside the chunk, and chunks are no longer than the limit.
            first_end = chunk.find(b"\n") + 1
            if skipping or len(pending) + first_end - 1 > limit:
                yield self._bad(too_long)
                block = chunk[first_end : end + 1]
                skipping = False
            else:
                block = pending + chunk[: end + 1]
            pending = chunk[end + 1 :]
            yield from self._decode(block)
        if skipping:
            yield self._bad(too_long)
        elif pending:
            yield from self._decode(pending)

    def _decode(self, block: bytes) -> Iterator[str]:
        """The lines of ``block``: one C-level decode and split in the common case, line by
        line only when the block holds invalid UTF-8."""
        if not block:
            return
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            for raw in block.split(b"\n")[:-1] if block.endswith(b"\n") else block.split(b"\n"):
                try:
                    line = raw.decode("utf-8") + "\n"
                except UnicodeDecodeError:
                    yield self._bad("line is not valid UTF-8 text")
                    continue
                self._lines += 1
                yield line
            return
        self._lines += block.count(b"\n") + (not block.endswith(b"\n"))
        yield from io.StringIO(text, newline="\n")
