"""A streaming ``multipart/form-data`` parser.

File parts go straight to disk in chunks, so a 200 MB upload costs a few kilobytes of memory.
The parser keeps only a tail of ``len(delimiter) - 1`` bytes between reads: that is the most a
delimiter split across two reads can have in the first read. (``cgi`` is gone from the
standard library and ``email`` parsers hold the whole body, hence this module.)
"""

from __future__ import annotations

import email.message
import os
import uuid
from dataclasses import dataclass, field
from typing import IO, BinaryIO

CHUNK = 64 * 1024
_MAX_HEADER_BYTES = 16 * 1024
_MAX_FIELD_BYTES = 1024 * 1024


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


@dataclass
class UploadedFile:
    """One file part written to ``path`` (removed already when ``too_large``)."""

    path: str
    filename: str
    size: int
    too_large: bool = False


@dataclass
class MultipartResult:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete every file written for this request."""
        for f in self.files.values():
            if not f.too_large and os.path.exists(f.path):
                os.unlink(f.path)


def boundary_of(content_type: str) -> bytes:
    msg = email.message.Message()
    msg["content-type"] = content_type
    if msg.get_content_type() != "multipart/form-data":
        raise MultipartError("expected multipart/form-data")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("multipart boundary missing")
    return boundary.encode("latin-1")


def _disposition(raw_headers: bytes) -> tuple[str | None, str | None]:
    msg = email.message.Message()
    for line in raw_headers.decode("utf-8", "replace").split("\r\n"):
        if ":" in line:
            key, value = line.split(":", 1)
            msg[key.strip()] = value.strip()
    name = msg.get_param("name", header="content-disposition")
    filename = msg.get_param("filename", header="content-disposition")
    return (
        name if isinstance(name, str) else None,
        filename if isinstance(filename, str) else None,
    )


class _Source:
    """Reads at most ``length`` bytes (all of them when ``length`` is None) in chunks."""

    def __init__(self, stream: BinaryIO, length: int | None) -> None:
        self.stream = stream
        self.remaining = length

    def read(self) -> bytes:
        if self.remaining is not None:
            if self.remaining <= 0:
                return b""
            data = self.stream.read(min(CHUNK, self.remaining))
            self.remaining -= len(data)
            return data
        return self.stream.read(CHUNK)

    def drain(self) -> None:
        while self.read():
            pass


def parse_multipart(
    stream: BinaryIO,
    content_type: str,
    content_length: int | None,
    file_dir: str,
    max_file_bytes: int,
) -> MultipartResult:
    """Parse a form body from ``stream``; file parts land in ``file_dir``.

    A file part larger than ``max_file_bytes`` is deleted and flagged ``too_large``; the rest
    of the body is still read so the client receives the error response instead of a reset.
    """
    delimiter_tail = b"--" + boundary_of(content_type)
    delimiter = b"\r\n" + delimiter_tail
    source = _Source(stream, content_length)
    result = MultipartResult()
    buf = b""

    def fill() -> None:
        nonlocal buf
        data = source.read()
        if not data:
            raise MultipartError("unexpected end of multipart body")
        buf += data

    try:
        # Preamble: everything before the first boundary is ignored.
        while (idx := buf.find(delimiter_tail)) < 0:
            buf = buf[-len(delimiter_tail) :]
            fill()
        buf = buf[idx + len(delimiter_tail) :]
        while True:
            while len(buf) < 2:
                fill()
            if buf.startswith(b"--"):
                break  # closing delimiter
            while (eol := buf.find(b"\r\n")) < 0:
                fill()
            buf = buf[eol + 2 :]
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > _MAX_HEADER_BYTES:
                    raise MultipartError("part headers too long")
                fill()
            name, filename = _disposition(buf[:end])
            buf = buf[end + 4 :]
            sink: IO[bytes] | bytearray
            upload: UploadedFile | None = None
            if filename is not None:
                path = os.path.join(file_dir, f"upload-{uuid.uuid4().hex}")
                sink = open(path, "wb")  # noqa: SIM115 - closed in the finally below
                upload = UploadedFile(path=path, filename=filename, size=0)
                if name:
                    result.files[name] = upload
            else:
                sink = bytearray()
            try:
                while True:
                    idx = buf.find(delimiter)
                    chunk = buf[:idx] if idx >= 0 else buf[: max(0, len(buf) - len(delimiter) + 1)]
                    buf = buf[len(chunk) :]
                    if upload is not None:
                        upload.size += len(chunk)
                        if upload.size > max_file_bytes and not upload.too_large:
                            upload.too_large = True
                        if not upload.too_large and not isinstance(sink, bytearray):
                            sink.write(chunk)
                    elif isinstance(sink, bytearray):
                        if len(sink) + len(chunk) > _MAX_FIELD_BYTES:
                            raise MultipartError("form field too large")
                        sink += chunk
                    if idx >= 0:
                        buf = buf[len(delimiter) :]
                        break
                    fill()
            finally:
                if not isinstance(sink, bytearray):
                    sink.close()
            if upload is not None and upload.too_large:
                os.unlink(upload.path)
            if isinstance(sink, bytearray) and name is not None:
                result.fields[name] = sink.decode("utf-8", "replace")
        source.drain()
    except BaseException:
        result.discard()
        raise
    return result
