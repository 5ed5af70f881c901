"""The control socket: JSON request/response lines, served without blocking the agent's loop."""

import json
import os
import socket
import stat
import threading

import pytest

from ebpfguard.client import NoAgent, Refused, call
from ebpfguard.control import ControlError, ControlServer
from ebpfguard.outputs.eventsocket import SocketBusy


@pytest.fixture
def server(tmp_path):
    srv = ControlServer.open(str(tmp_path / "run" / "control.sock"))
    srv.may_connect = lambda uid: True  # unit tests need not run as root
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            srv.serve()
            stop.wait(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield srv
    stop.set()
    thread.join()
    srv.close()


def request(path, op, args=None):
    return call(op, args, path)


def test_a_registered_operation_answers_with_its_result(server):
    server.handle("echo", lambda args: {"got": args})
    assert request(str(server.path), "echo", {"x": 1}) == {"got": {"x": 1}}
    assert request(str(server.path), "ping")["pid"] == os.getpid()


def test_unknown_operations_and_handler_refusals_are_errors_not_crashes(server):
    def refuse(_args):
        raise ControlError("no such thing", code="unknown_sandbox")

    server.handle("refuse", refuse)
    server.handle("broken", lambda _args: 1 / 0)
    with pytest.raises(Refused, match="unknown op 'nope'"):
        request(str(server.path), "nope")
    with pytest.raises(Refused, match="no such thing"):
        request(str(server.path), "refuse")
    with pytest.raises(Refused, match="broken failed: ZeroDivisionError"):
        request(str(server.path), "broken")
    assert request(str(server.path), "ping")


def test_a_refusal_carries_its_code_for_clients(server):
    def refuse(_args):
        raise ControlError("never seen", code="unknown_sandbox")

    server.handle("report", refuse)
    assert server.answer(b'{"op": "report"}') == {"ok": False, "error": "never seen", "code": "unknown_sandbox"}


def test_several_requests_on_one_connection_are_answered_in_order(server):
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(server.path))
        conn.sendall(b'{"op": "ping"}\nnot json\n{"op": 3}\n')
        conn.settimeout(5)
        data = b""
        while data.count(b"\n") < 3:
            data += conn.recv(4096)
    answers = [json.loads(line) for line in data.splitlines()]
    assert answers[0]["ok"] and answers[1] == {"ok": False, "error": "the request is not JSON"}
    assert not answers[2]["ok"]


def test_the_socket_is_private_and_a_live_one_is_not_taken_over(server):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    with pytest.raises(SocketBusy):
        ControlServer.open(str(server.path))


def test_no_agent_is_a_clear_error(tmp_path):
    with pytest.raises(NoAgent, match="no agent answers"):
        request(str(tmp_path / "absent.sock"), "ping")


def test_peers_other_than_root_are_refused_by_default(tmp_path):
    srv = ControlServer.open(str(tmp_path / "c.sock"))
    try:
        assert srv.may_connect(0) and not srv.may_connect(1000)
    finally:
        srv.close()
