"""ClientHello SNI parser: real OpenSSL hellos, hellos cut by the capture bound, non-TLS flows,
and a bounded fuzz test.

Captured: `openssl s_client` (OpenSSL 3.0) connecting to a listener on 127.0.0.1; made live:
Python's `ssl` over memory BIOs, which is the same OpenSSL writing a real hello.
"""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire_captures import OPENSSL_NO_SNI_HELLO, OPENSSL_TLS12_HELLO, OPENSSL_TLS13_HELLO

from ebpfguard.enrich.wire.tls import client_hello_sni


def python_client_hello(server_name: str) -> bytes:
    """The first flight of a Python `ssl` client: a real OpenSSL ClientHello, host files unread."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def sni_end(hello: bytes, name: bytes) -> int:
    """Where the server_name extension holding `name` ends in the captured bytes."""
    return hello.index(name) + len(name)


def test_openssl_tls13_hello_names_its_server():
    assert client_hello_sni(OPENSSL_TLS13_HELLO) == "xmr-eu1.nanopool.org"


def test_openssl_tls12_hello_names_its_server():
    assert client_hello_sni(OPENSSL_TLS12_HELLO) == "gulf.moneroocean.stream"


def test_hello_without_server_name_gives_none():
    assert client_hello_sni(OPENSSL_NO_SNI_HELLO) is None


def test_python_ssl_hello_names_its_server_in_lower_case():
    assert client_hello_sni(python_client_hello("Pool.SupportXMR.com")) == "pool.supportxmr.com"


def test_hello_to_an_ip_address_carries_no_server_name():
    # RFC 6066: literal addresses are not sent as SNI.
    assert client_hello_sni(python_client_hello("192.0.2.1")) is None


@pytest.mark.parametrize("hello,name", [(OPENSSL_TLS13_HELLO, b"xmr-eu1.nanopool.org"),
                                        (OPENSSL_TLS12_HELLO, b"gulf.moneroocean.stream")])
def test_hello_cut_by_the_capture_gives_the_name_only_when_captured_whole(hello, name):
    end = sni_end(hello, name)
    for cut in range(len(hello) + 1):
        expected = name.decode() if cut >= end else None
        assert client_hello_sni(hello[:cut]) == expected, cut


def test_hello_split_over_two_records_is_joined():
    record, handshake = OPENSSL_TLS13_HELLO[:5], OPENSSL_TLS13_HELLO[5:]
    first, second = handshake[:40], handshake[40:]
    split = (record[:3] + len(first).to_bytes(2, "big") + first
             + record[:3] + len(second).to_bytes(2, "big") + second)
    assert client_hello_sni(split) == "xmr-eu1.nanopool.org"


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nHost: xmr-eu1.nanopool.org\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    b'{"id":1,"method":"login","params":{"login":"x","pass":"x"}}\n',
    b"",
    b"\x16\x03",
])
def test_other_protocols_give_none(payload):
    assert client_hello_sni(payload) is None


def test_a_server_hello_is_not_a_client_hello():
    server_hello = bytearray(OPENSSL_TLS12_HELLO)
    server_hello[5] = 0x02
    assert client_hello_sni(bytes(server_hello)) is None


def test_trailing_dot_is_dropped_and_odd_bytes_are_escaped():
    hello = OPENSSL_TLS12_HELLO.replace(b"gulf.moneroocean.stream", b"gulf.moneroocean.strea.")
    assert client_hello_sni(hello) == "gulf.moneroocean.strea"
    hello = OPENSSL_TLS12_HELLO.replace(b"gulf.moneroocean.stream", b"gulf.moneroocean\nstream")
    assert client_hello_sni(hello) == "gulf.moneroocean\\010stream"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_never_raise(data):
    result = client_hello_sni(data)
    assert result is None or (result.isascii() and result.isprintable())


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([OPENSSL_TLS13_HELLO, OPENSSL_TLS12_HELLO, OPENSSL_NO_SNI_HELLO]),
       st.lists(st.tuples(st.integers(0, 330), st.integers(0, 255)), max_size=6), st.integers(0, 330))
def test_fuzz_mutated_real_hellos_never_raise(hello, flips, cut):
    data = bytearray(hello)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    result = client_hello_sni(bytes(data[:max(0, len(data) - cut)]))
    assert result is None or (result.isascii() and result.isprintable())
