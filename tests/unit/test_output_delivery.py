"""Delivery to a real HTTP receiver: order kept across an outage, bounded spool, never blocking,
retries with backoff and jitter, TLS with a client certificate, secrets kept out of messages."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from ebpfguard.outputs.delivery import Delivery, DiskSpool, MemorySpool, OutputCounters, Retry
from ebpfguard.outputs.httpsend import HeadersFileError, HttpPoster, Tls, read_headers_file, redact_url
from ebpfguard.outputs.webhook import WebhookFormat
from receivers import HttpReceiver, wait_until

FAST = Retry(initial_s=0.05, max_s=0.2)


def alert(n: int, severity: str = "high") -> dict:
    return {"kind": "alert", "rule": "miner.exec", "severity": severity, "seq": n,
            "sandbox": {"name": "sandbox-a"}, "process": {"pid": 100 + n, "argv": ["xmrig"]}}


def seqs(receiver: HttpReceiver) -> list[int]:
    return [json.loads(body)["seq"] for body in receiver.bodies()]


def webhook(receiver: HttpReceiver, backlog, queue_size: int = 100, warnings: list | None = None,
            poster: HttpPoster | None = None) -> Delivery:
    return Delivery("webhook", WebhookFormat("info"), poster or HttpPoster(receiver.url, 2.0), queue_size=queue_size,
                    backlog=backlog, retry=FAST, counters=OutputCounters("webhook"),
                    warn=(warnings if warnings is not None else []).append)


@pytest.fixture
def receiver():
    r = HttpReceiver()
    yield r
    r.down()


def test_alerts_offered_while_the_receiver_is_down_are_spooled_and_delivered_in_order(receiver, tmp_path):
    out = webhook(receiver, DiskSpool(tmp_path / "spool", 1 << 20)).start()
    for n in range(20):
        out.offer(alert(n))
    wait_until(lambda: out.counters.snapshot().queue_depth == 20 and len(DiskSpool(tmp_path / "spool", 1 << 20)) == 20,
               10, "20 alerts spooled")
    assert out.counters.snapshot().failed >= 1
    receiver.up()
    for n in range(20, 25):  # alerts that arrive after it came back still queue behind the backlog
        out.offer(alert(n))
    wait_until(lambda: len(receiver.bodies()) == 25, 20, "25 alerts delivered")
    out.stop()
    out.join(5)
    assert seqs(receiver) == list(range(25))
    snap = out.counters.snapshot()
    assert (snap.sent, snap.queue_depth, sum(snap.dropped.values())) == (25, 0, 0)
    assert list((tmp_path / "spool").glob("*.seg")) == []


def test_a_full_spool_drops_the_oldest_counts_them_and_delivers_the_rest_in_order(receiver, tmp_path):
    size = len(WebhookFormat("info").payloads(alert(10), 0)[0]) + 4  # a length, then the payload
    out = webhook(receiver, DiskSpool(tmp_path / "spool", size * 5, segment_bytes=1)).start()  # one per segment
    for n in range(10, 22):  # 12 payloads of the same size into a spool that holds 5
        out.offer(alert(n))
    wait_until(lambda: out.counters.snapshot().dropped["spool_full"] == 7, 10, "7 oldest dropped")
    receiver.up()
    wait_until(lambda: len(receiver.bodies()) == 5, 20, "the 5 newest delivered")
    out.stop()
    out.join(5)
    assert seqs(receiver) == [17, 18, 19, 20, 21]


def test_a_spool_left_by_a_stopped_agent_is_delivered_first_by_the_next(receiver, tmp_path):
    first = webhook(receiver, DiskSpool(tmp_path / "spool", 1 << 20)).start()
    for n in range(3):
        first.offer(alert(n))
    wait_until(lambda: len(DiskSpool(tmp_path / "spool", 1 << 20)) == 3, 10, "3 spooled")
    first.stop()
    first.join(5)
    assert first.counters.snapshot().dropped["shutdown"] == 0
    receiver.up()
    second = webhook(receiver, DiskSpool(tmp_path / "spool", 1 << 20))
    assert second.counters.snapshot().queue_depth == 3
    second.start()
    second.offer(alert(3))
    wait_until(lambda: len(receiver.bodies()) == 4, 20, "4 delivered")
    second.stop()
    second.join(5)
    assert seqs(receiver) == [0, 1, 2, 3]


def test_alerts_queued_behind_a_receiver_that_never_answers_are_spooled_at_stop_and_sent_by_the_next_agent(
        receiver, tmp_path):
    import socket

    with socket.socket() as silent:  # accepts connections and never answers: each attempt times out
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        stuck = Delivery("webhook", WebhookFormat("info"), HttpPoster(f"http://127.0.0.1:{silent.getsockname()[1]}/", 1.0),
                         queue_size=100, backlog=DiskSpool(tmp_path / "spool", 1 << 20), retry=FAST,
                         counters=OutputCounters("webhook"), warn=[].append).start()
        for n in range(10):
            stuck.offer(alert(n))
        stuck.stop()
        stuck.join(10)
    assert len(DiskSpool(tmp_path / "spool", 1 << 20)) == 10
    assert sum(stuck.counters.snapshot().dropped.values()) == 0
    receiver.up()
    after = webhook(receiver, DiskSpool(tmp_path / "spool", 1 << 20)).start()
    wait_until(lambda: len(receiver.bodies()) == 10, 20, "the 10 spooled alerts delivered")
    after.stop()
    after.join(5)
    assert seqs(receiver) == list(range(10))


def test_offer_never_blocks_and_counts_what_a_full_queue_drops(receiver):
    out = webhook(receiver, MemorySpool(10), queue_size=5)  # worker not started: nothing drains the queue
    started = time.monotonic()
    for n in range(1000):
        out.offer(alert(n))
    elapsed = time.monotonic() - started
    snap = out.counters.snapshot()
    assert snap.dropped["queue_full"] == 995 and snap.queue_depth == 5
    assert elapsed < 5.0, "offer() must not wait for the receiver"


def test_alerts_below_the_minimum_severity_and_plain_events_are_not_queued(receiver):
    out = Delivery("webhook", WebhookFormat("high"), HttpPoster(receiver.url, 1.0), queue_size=10,
                   backlog=MemorySpool(10), retry=FAST, counters=OutputCounters("webhook"), warn=[].append)
    for event in (alert(1, "medium"), alert(2, "low"), {"kind": "exec", "process": {"pid": 1}}):
        out.offer(event)
    out.offer(alert(3, "critical"))
    assert out.counters.snapshot().queue_depth == 1


def test_a_payload_the_receiver_refuses_is_dropped_as_rejected_and_the_next_goes_through(receiver):
    receiver.up()
    receiver.status = 400
    out = webhook(receiver, MemorySpool(10)).start()
    out.offer(alert(1))
    wait_until(lambda: out.counters.snapshot().dropped["rejected"] == 1, 10, "refused payload dropped")
    receiver.status = 200
    out.offer(alert(2))
    wait_until(lambda: out.counters.snapshot().sent == 1, 10, "next payload sent")
    out.stop()
    out.join(5)
    assert seqs(receiver) == [1, 2]


def test_a_server_error_is_retried_until_it_succeeds(receiver):
    receiver.up()
    receiver.status = 503
    out = webhook(receiver, MemorySpool(10)).start()
    out.offer(alert(1))
    wait_until(lambda: out.counters.snapshot().failed >= 3, 10, "three failed attempts")
    receiver.status = 200
    wait_until(lambda: out.counters.snapshot().sent == 1, 10, "delivered after the errors")
    out.stop()
    out.join(5)
    assert set(seqs(receiver)) == {1}


def test_a_memory_backlog_left_at_shutdown_is_counted_as_dropped(receiver):
    out = webhook(receiver, MemorySpool(100)).start()
    for n in range(4):
        out.offer(alert(n))
    wait_until(lambda: out.counters.snapshot().failed >= 1 and out.counters.snapshot().queue_depth == 4, 10, "backlog")
    out.stop()
    out.join(5)
    assert out.counters.snapshot().dropped["shutdown"] == 4


@pytest.mark.parametrize("failures", range(8))
def test_backoff_grows_exponentially_to_its_cap_with_jitter_between_half_and_all(failures):
    retry = Retry(initial_s=0.5, max_s=10.0)
    ceiling = min(10.0, 0.5 * 2 ** failures)
    assert retry.delay(failures, rand=lambda: 0.0) == ceiling / 2
    assert retry.delay(failures, rand=lambda: 1.0) == ceiling


def test_disk_spool_drops_its_oldest_segment_when_full_and_keeps_order_across_reopen(tmp_path):
    spool = DiskSpool(tmp_path / "s", 240, segment_bytes=30)  # records of 4 + 11 bytes: 2 per segment, 16 in all
    dropped = [spool.append(b"x" * 10 + bytes([n])) for n in range(18)]
    assert dropped == [0] * 16 + [2, 0] and len(spool) == 16  # the 17th dropped segment 0 (payloads 0 and 1)
    assert spool.append(b"y" * 237) == 1  # larger than the whole spool: refused, counted
    assert spool.head()[-1] == 2
    spool.pop()  # 2 delivered: a restart resumes at 3
    reopened = DiskSpool(tmp_path / "s", 240, segment_bytes=30)
    assert len(reopened) == 15
    order = []
    while len(reopened):
        order.append(reopened.head()[-1])
        reopened.pop()
    assert order == list(range(3, 18))
    assert list((tmp_path / "s").glob("*.seg")) == [] and reopened.bytes == 0


def test_a_record_cut_short_by_a_crash_ends_its_segment(tmp_path):
    spool = DiskSpool(tmp_path / "s", 1 << 20)
    for n in range(3):
        spool.append(bytes([n]) * 5)
    (segment,) = (tmp_path / "s").glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-2])
    reopened = DiskSpool(tmp_path / "s", 1 << 20)
    assert len(reopened) == 2 and reopened.head() == bytes([0]) * 5


# -- headers and secrets -------------------------------------------------------------------------

SECRET = "s3cr3t-token-value"


def test_headers_file_sends_the_bearer_token_and_no_message_ever_shows_it(receiver, tmp_path):
    headers_file = tmp_path / "headers"
    headers_file.write_text(f"# for the hook\nAuthorization: Bearer {SECRET}\n\nX-Team: infra\n")
    headers = read_headers_file(str(headers_file))
    receiver.up()
    receiver.status = 401
    receiver.answer = f"bad token Bearer {SECRET}".encode()  # a receiver that echoes the request back
    warnings: list[str] = []
    out = webhook(receiver, MemorySpool(10), warnings=warnings, poster=HttpPoster(receiver.url, 2.0, headers=headers)).start()
    out.offer(alert(1))
    wait_until(lambda: out.counters.snapshot().dropped["rejected"] == 1, 10, "refused")
    out.stop()
    out.join(5)
    _, sent_headers, body = receiver.requests[0]
    assert sent_headers["Authorization"] == f"Bearer {SECRET}" and sent_headers["X-Team"] == "infra"
    assert SECRET not in body.decode()
    assert warnings and not any(SECRET in w for w in warnings)


def test_a_bad_headers_file_names_file_and_line_but_never_the_value(tmp_path):
    headers_file = tmp_path / "headers"
    headers_file.write_text(f"Authorization: Bearer ok\nbad line {SECRET}\n")
    with pytest.raises(HeadersFileError) as problem:
        read_headers_file(str(headers_file))
    assert f"{headers_file}:2" in str(problem.value) and SECRET not in str(problem.value)


def test_credentials_in_a_url_are_sent_as_basic_auth_and_left_out_of_messages(receiver):
    receiver.up()
    poster = HttpPoster(f"http://user:{SECRET}@127.0.0.1:{receiver.port}/hook", 2.0)
    poster(b"{}")
    assert receiver.requests[0][1]["Authorization"].startswith("Basic ")
    assert SECRET not in poster.where and SECRET not in redact_url(poster.url)


# -- TLS -------------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(extra + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return d


def _tls_receiver(pki: Path) -> HttpReceiver:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    return HttpReceiver().up(ThreadingHTTPServer, wrap=lambda s: context.wrap_socket(s, server_side=True))


def test_https_with_our_ca_and_a_client_certificate_is_delivered(pki):
    receiver = _tls_receiver(pki)
    try:
        tls = Tls(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
        HttpPoster(f"https://127.0.0.1:{receiver.port}/hook", 5.0, tls)(b'{"seq": 1}')
        assert receiver.bodies() == [b'{"seq": 1}']
    finally:
        receiver.down()


def test_https_without_the_client_certificate_or_our_ca_fails_and_is_retried(pki):
    from ebpfguard.outputs.delivery import TransientError

    receiver = _tls_receiver(pki)
    try:
        url = f"https://127.0.0.1:{receiver.port}/hook"
        with pytest.raises(TransientError):
            HttpPoster(url, 5.0, Tls(str(pki / "ca.pem")))(b"{}")  # no client certificate
        with pytest.raises(TransientError):
            HttpPoster(url, 5.0, Tls("", str(pki / "client.pem"), str(pki / "client.key")))(b"{}")  # untrusted server
        assert receiver.bodies() == []
    finally:
        receiver.down()


def test_a_receiver_that_never_answers_times_out(receiver):
    import socket

    from ebpfguard.outputs.delivery import TransientError

    with socket.socket() as silent:  # accepts connections (backlog) and never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(TransientError):
            HttpPoster(f"http://127.0.0.1:{silent.getsockname()[1]}/", 0.5)(b"{}")
        assert time.monotonic() - started < 10
