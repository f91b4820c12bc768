"""Reading a tar archive from a stream (stdin) so that a truncated one is an error.

``tarfile.open(fileobj=..., mode="r|gz")`` reads a gzip stream that breaks off (a copy
interrupted, a disk that filled up while ``relayctl backup`` wrote it) as if the archive
ended there: the members before the break come out and no error is raised. Python's
``gzip`` module does notice (``EOFError``: no end-of-stream marker), so a gzip archive is
decompressed by it and, once tarfile has read the last member, read to its end.

An uncompressed tar stream that breaks off exactly between two members cannot be told from
a complete one this way (tarfile does not insist on the end-of-archive blocks); the
archives the README names are gzip-compressed.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"


class _Prefixed:
    """``src`` with ``head`` (bytes already read from it) put back in front."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self.head, self.src = head, src

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.src.read(size)
        if size < 0:
            data, self.head = self.head + self.src.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data if len(data) == size else data + self.src.read(size - len(data))


@contextmanager
def open_stream(src: BinaryIO) -> Iterator[tarfile.TarFile]:
    """A tarfile opened on the stream ``src`` (tar, or tar compressed with gzip, bzip2 or xz),
    to be read member by member inside the ``with`` block. Raises tarfile.ReadError for an
    unreadable archive and, for a gzip one, for compressed data that ends early or is damaged,
    also when that shows only after the last member (on leaving the block).
    """
    head = src.read(2)
    stream = _Prefixed(head, src)
    if head != GZIP_MAGIC:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # type: ignore[call-overload]
            yield tar
        return
    gz = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[call-overload]
    try:
        with tarfile.open(fileobj=gz, mode="r|") as tar:
            yield tar
        while gz.read(1 << 16):  # to the gzip trailer: a truncated archive has none
            pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise tarfile.ReadError(f"the compressed archive ends early or is damaged ({exc})") \
            from None
