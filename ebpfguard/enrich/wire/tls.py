"""The server name (SNI) of a TLS ClientHello, read from the first bytes of a flow.

A ClientHello is a handshake message inside one or more TLS records (RFC 8446 5.1, 4.1.2; RFC
5246 7.4.1.2); the SNI is the `server_name` extension (RFC 6066 section 3). The capture keeps
only the first bytes of a flow, so the hello may be cut short: the name counts only when the
whole extension holding it was captured. With Encrypted Client Hello the name seen here is the
outer, public one.
"""

from __future__ import annotations

from typing import Optional

from ebpfguard.enrich.wire.dns import escape_label

RECORD_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXTENSION_SERVER_NAME = 0x0000
NAME_TYPE_HOST_NAME = 0
MAX_HOST_NAME_BYTES = 255


class _Cut(Exception):
    """The bytes end (or a length field lies) before the field being read."""


def client_hello_sni(data: bytes) -> Optional[str]:
    """The host name a ClientHello asks for, as DNS names are written; None if there is none.

    None too when `data` is not the start of a TLS handshake or the name lies past its end.
    Never raises.
    """
    try:
        return _sni(_handshake_bytes(data))
    except _Cut:
        return None


def _handshake_bytes(data: bytes) -> bytes:
    """The handshake stream: the payloads of the leading handshake records, joined.

    A ClientHello may be split over records; the last record may be cut by the capture.
    """
    stream = bytearray()
    offset = 0
    while offset + 5 <= len(data) and data[offset] == RECORD_HANDSHAKE:
        if data[offset + 1] != 0x03:  # SSL 3.0 to TLS 1.3 all put 3 here
            raise _Cut
        length = int.from_bytes(data[offset + 3:offset + 5], "big")
        stream += data[offset + 5:offset + 5 + length]
        offset += 5 + length
    if not stream:
        raise _Cut
    return bytes(stream)


def _sni(hello: bytes) -> Optional[str]:
    reader = _Reader(hello)
    if reader.u8() != HANDSHAKE_CLIENT_HELLO:
        raise _Cut
    reader.skip(3)  # handshake length: the capture may hold less, the fields say where to stop
    reader.skip(2 + 32)  # legacy_version, random
    reader.skip(reader.u8())  # legacy_session_id
    reader.skip(reader.u16())  # cipher_suites
    reader.skip(reader.u8())  # legacy_compression_methods
    extensions = _Reader(reader.take(reader.u16(), partial=True))
    while True:
        kind, length = extensions.u16(), extensions.u16()
        if kind == EXTENSION_SERVER_NAME:
            return _host_name(_Reader(extensions.take(length)))
        extensions.skip(length)


def _host_name(extension: "_Reader") -> Optional[str]:
    """The first host_name entry of a server_name list (RFC 6066 allows one of each type)."""
    names = _Reader(extension.take(extension.u16()))
    while True:
        name_type = names.u8()
        name = names.take(names.u16())
        if name_type == NAME_TYPE_HOST_NAME:
            host = name.rstrip(b".")
            if not host or len(host) > MAX_HOST_NAME_BYTES:
                return None
            # Written like a DNS name so that both match the same list entries the same way.
            return ".".join(escape_label(label) for label in host.split(b"."))


class _Reader:
    """Reads big-endian fields forward; `_Cut` at the end of the bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int, *, partial: bool = False) -> bytes:
        """The next `count` bytes; with `partial`, what there is of them (a cut capture)."""
        chunk = self.data[self.offset:self.offset + count]
        if len(chunk) < count and not partial:
            raise _Cut
        self.offset += count
        return chunk

    def skip(self, count: int) -> None:
        if self.offset + count > len(self.data):
            raise _Cut
        self.offset += count

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")
