"""The agent's event socket, driven as the agent's loop drives it, with real Unix sockets."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from ebpfguard.outputs.eventsocket import EventSocket, SocketBusy
from ebpfguard.outputs.stats import PipelineStats


def event(n: int, pad: int = 0) -> dict:
    return {"kind": "exec", "sandbox": {"name": "sandbox-a"}, "process": {"pid": n, "argv": ["x" * pad]}}


def viewer(path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(path))
    return conn


def read_all(conn: socket.socket) -> list[dict]:
    conn.settimeout(0.2)
    data = b""
    try:
        while chunk := conn.recv(1 << 16):
            data += chunk
    except socket.timeout:
        pass
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def served(tmp_path):
    stats = PipelineStats()
    server = EventSocket.open(str(tmp_path / "run" / "events.sock"), stats, buffer_bytes=4096, max_viewers=4)
    yield server, stats
    server.close()


def test_socket_is_owner_only_in_a_new_private_directory(served):
    server, _ = served
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700


def test_every_viewer_gets_every_event_in_order(served):
    server, stats = served
    a, b = viewer(server.path), viewer(server.path)
    server.flush_if_due()
    for n in range(20):
        server.write(event(n))
    server.flush_if_due()
    for conn in (a, b):
        assert [e["process"]["pid"] for e in read_all(conn)] == list(range(20))
    assert not stats.snapshot().dropped


def test_a_viewer_that_does_not_read_is_skipped_counted_and_told_when_it_catches_up(served):
    server, stats = served
    slow, fast = viewer(server.path), viewer(server.path)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.flush_if_due()
    sent = 0
    received_fast = []
    # Write until the slow viewer's kernel buffer and its 4 KiB queue are both full.
    while not stats.snapshot().dropped and sent < 10000:
        server.write(event(sent, pad=200))
        sent += 1
        server.flush_if_due()
        received_fast += read_all(fast) if sent % 50 == 0 else []
    for n in range(sent, sent + 100):
        server.write(event(n, pad=200))
        server.flush_if_due()
    sent += 100
    missed = stats.snapshot().dropped[("viewer", "slow_reader")]
    assert missed > 0
    received_fast += read_all(fast)
    assert [e["process"]["pid"] for e in received_fast] == list(range(sent))  # the fast one lost nothing

    got: list[dict] = []
    for _ in range(10):            # the slow viewer reads at last: its queue drains, then
        got += read_all(slow)      # the agent sees it caught up and tells it
        server.flush_if_due()
    markers = [e for e in got if e["kind"] == "skipped"]
    assert [m["missed"] for m in markers] == [missed]
    pids = [e["process"]["pid"] for e in got if e["kind"] == "exec"]
    assert len(pids) + missed == sent and pids == sorted(pids)

    server.write(event(sent))      # and it is back on the live stream
    server.flush_if_due()
    assert [e["process"]["pid"] for e in read_all(slow)] == [sent]


def test_a_viewer_that_went_away_is_forgotten(served):
    server, _ = served
    gone = viewer(server.path)
    server.flush_if_due()
    gone.close()
    for n in range(3):
        server.write(event(n))
        server.flush_if_due()
    assert server.viewers == []


def test_a_socket_left_by_a_dead_agent_is_replaced(tmp_path):
    path = tmp_path / "events.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()  # bound, never listening: what a killed agent leaves
    server = EventSocket.open(str(path), PipelineStats(), 4096, 4)
    server.close()
    assert not path.exists()


def test_a_live_agents_socket_is_not_taken_over(served):
    server, _ = served
    with pytest.raises(SocketBusy):
        EventSocket.open(str(server.path), PipelineStats(), 4096, 4)


def test_viewers_beyond_the_limit_are_refused(served):
    server, _ = served
    conns = [viewer(server.path) for _ in range(6)]
    server.flush_if_due()
    assert len(server.viewers) == 4
    for conn in conns:
        conn.close()


def test_a_symlink_where_the_socket_goes_is_refused_and_not_followed(tmp_path):
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(tmp_path / "elsewhere.sock"))
    left.close()
    os.symlink(tmp_path / "elsewhere.sock", tmp_path / "events.sock")
    with pytest.raises(OSError, match="not a socket"):
        EventSocket.open(str(tmp_path / "events.sock"), PipelineStats(), 4096, 4)
    assert (tmp_path / "elsewhere.sock").exists() and os.path.islink(tmp_path / "events.sock")


def test_a_regular_file_where_the_socket_goes_is_left_alone(tmp_path):
    (tmp_path / "events.sock").write_text("not ours")
    with pytest.raises(OSError, match="not a socket"):
        EventSocket.open(str(tmp_path / "events.sock"), PipelineStats(), 4096, 4)
    assert (tmp_path / "events.sock").read_text() == "not ours"

