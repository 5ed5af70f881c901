"""The control socket: JSON request/response lines, served without blocking the agent's loop."""

import json
import os
import select
import socket
import stat
import threading

import pytest

from ebpfguard.client import NoAgent, Refused, call
from ebpfguard.config import load_config
from ebpfguard.control import ControlError, ControlServer
from ebpfguard.outputs.eventsocket import SocketBusy
from ebpfguard.outputs.runner_access import Grant, Peer, RunnerAccess


@pytest.fixture
def server(tmp_path):
    # Unit tests need not run as root: this uid is granted every sandbox, test ops are open.
    srv = ControlServer.open(str(tmp_path / "run" / "control.sock"), RunnerAccess([Grant(os.getuid(), None, ("*",))]),
                             load_config()["sandbox"])
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
    server.handle("echo", lambda args, _peer: {"got": args}, root_only=False)
    assert request(str(server.path), "echo", {"x": 1}) == {"got": {"x": 1}}
    assert request(str(server.path), "ping")["pid"] == os.getpid()


def test_unknown_operations_and_handler_refusals_are_errors_not_crashes(server):
    def refuse(_args, _peer):
        raise ControlError("no such thing", code="unknown_sandbox")

    server.handle("refuse", refuse, root_only=False)
    server.handle("broken", lambda _args, _peer: 1 / 0, root_only=False)
    with pytest.raises(Refused, match="unknown op 'nope'"):
        request(str(server.path), "nope")
    with pytest.raises(Refused, match="no such thing"):
        request(str(server.path), "refuse")
    with pytest.raises(Refused, match="broken failed: ZeroDivisionError"):
        request(str(server.path), "broken")
    assert request(str(server.path), "ping")


def test_a_refusal_carries_its_code_for_clients(server):
    def refuse(_args, _peer):
        raise ControlError("never seen", code="unknown_sandbox")

    server.handle("report", refuse, root_only=False)
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


def test_the_socket_is_private_without_grants_and_a_live_one_is_not_taken_over(tmp_path, server):
    private = ControlServer.open(str(tmp_path / "private.sock"))
    try:
        assert stat.S_IMODE(os.stat(private.path).st_mode) == 0o600
    finally:
        private.close()
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o666  # granted: checked per connection
    with pytest.raises(SocketBusy):
        ControlServer.open(str(server.path))


def test_no_agent_is_a_clear_error(tmp_path):
    with pytest.raises(NoAgent, match="no agent answers"):
        request(str(tmp_path / "absent.sock"), "ping")


def test_root_only_operations_refuse_others_and_callers_in_sandboxes(tmp_path):
    srv = ControlServer.open(str(tmp_path / "c.sock"), RunnerAccess([Grant(1000, None, ("*",))]))
    try:
        srv.handle("actions.list", lambda _args, _peer: [])
        root, runner = Peer(1, 0, frozenset({0}), "host"), Peer(1, 1000, frozenset({1000}), "host")
        assert srv.answer(b'{"op": "actions.list"}', root)["ok"]
        assert srv.answer(b'{"op": "actions.list"}', runner)["code"] == "forbidden"
        assert srv.answer(b'{"op": "actions.list"}', Peer(1, 0, frozenset({0}), "sandbox-a"))["code"] == "forbidden"
    finally:
        srv.close()


def test_a_watcher_gets_only_the_sandbox_it_asked_for(tmp_path):
    from ebpfguard.control import Subscription

    # One thread, as in the agent: its loop serves the socket and writes the stream.
    srv = ControlServer.open(str(tmp_path / "w.sock"), RunnerAccess([Grant(os.getuid(), None, ("*",))]),
                             load_config()["sandbox"])
    srv.handle("watch", lambda args, _peer: Subscription({"watching": args["sandbox"]},
                                                         lambda line: line["sandbox"]["name"] == args["sandbox"]),
               root_only=False)
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(srv.path))
            conn.sendall(b'{"op": "watch", "args": {"sandbox": "sandbox-a"}}\n')
            while not srv.clients or srv.clients[0].wants is None:
                srv.serve()
            srv.write({"kind": "alert", "sandbox": {"name": "sandbox-b"}, "rule": "x"})
            srv.write({"kind": "alert", "sandbox": {"name": "sandbox-a"}, "rule": "y"})
            conn.settimeout(5)
            data = b""
            while data.count(b"\n") < 2:
                data += conn.recv(4096)
    finally:
        srv.close()
    answer, alert = (json.loads(line) for line in data.splitlines())
    assert answer == {"ok": True, "result": {"watching": "sandbox-a"}}
    assert alert["rule"] == "y"


def test_a_watcher_that_stops_reading_is_skipped_ahead_and_told_how_many_it_missed(tmp_path):
    from ebpfguard.control import MAX_PENDING_BYTES, Subscription

    srv = ControlServer.open(str(tmp_path / "w.sock"), RunnerAccess([Grant(os.getuid(), None, ("*",))]),
                             load_config()["sandbox"])
    try:
        srv.handle("watch", lambda _args, _peer: Subscription("ok", lambda line: True), root_only=False)
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(srv.path))
            conn.sendall(b'{"op": "watch"}\n')
            while not srv.clients or srv.clients[0].wants is None:
                srv.serve()
            [client] = srv.clients
            line = {"kind": "alert", "sandbox": {"name": "s"}, "pad": "x" * 65536}
            while client.missed == 0:  # nobody reads: the socket fills, then the bounded outbox
                srv.write(line)
            assert len(client.outbox) <= MAX_PENDING_BYTES
            srv.write(line)
            assert client.missed == 2
            conn.setblocking(False)
            received = b""
            srv.write({"kind": "alert", "sandbox": {"name": "s"}, "rule": "after"})  # held back too
            for _ in range(100_000):  # the watcher reads again
                if b'"rule":"after"' in received:
                    break
                try:
                    received += conn.recv(1 << 20)
                except BlockingIOError:
                    pass
                srv.serve()
                if client.missed:
                    srv.write({"kind": "alert", "sandbox": {"name": "s"}, "rule": "after"})
    finally:
        srv.close()
    skipped = received.index(b'"kind":"skipped"')
    assert b'"missed":' in received[skipped:skipped + 100]
    assert skipped < received.index(b'"rule":"after"')


def ready(srv: ControlServer, timeout_s: float = 0) -> bool:
    """Whether the server's descriptor (the one the agent's loop waits on) is readable."""
    return bool(select.select([srv.fileno()], [], [], timeout_s)[0])


def test_the_servers_descriptor_is_readable_while_there_is_work_and_quiet_once_served(tmp_path):
    srv = ControlServer.open(str(tmp_path / "r.sock"), RunnerAccess([Grant(os.getuid(), None, ("*",))]),
                             load_config()["sandbox"])
    try:
        assert not ready(srv)
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(srv.path))
            assert ready(srv, 5)  # a connection to accept
            srv.serve()
            assert srv.clients and not ready(srv)
            conn.sendall(b'{"op": "ping"}\n')
            assert ready(srv, 5)  # a request to read
            srv.serve()
            assert not ready(srv)
            conn.settimeout(5)
            assert json.loads(conn.recv(4096))["ok"]
        assert ready(srv, 5)  # the client went
        srv.serve()
        assert not srv.clients and not ready(srv)
    finally:
        srv.close()


def test_a_client_that_closes_its_side_still_gets_its_answer_and_leaves_nothing_to_wake_for(tmp_path):
    srv = ControlServer.open(str(tmp_path / "h.sock"), RunnerAccess([Grant(os.getuid(), None, ("*",))]),
                             load_config()["sandbox"])
    srv.handle("big", lambda _args, _peer: "x" * 600_000, root_only=False)
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(srv.path))
            conn.sendall(b'{"op": "big"}\n')
            conn.shutdown(socket.SHUT_WR)
            for _ in range(1000):
                srv.serve()
                if srv.clients and srv.clients[0].ended:
                    break
            assert srv.clients[0].outbox  # more than the socket takes at once
            assert not ready(srv)  # the closed side does not wake the loop over and over
            conn.settimeout(5)
            received = b""
            while not received.endswith(b"\n"):
                received += conn.recv(1 << 20)
                if ready(srv, 0.1):  # room again
                    srv.serve()
            assert json.loads(received)["result"] == "x" * 600_000
        for _ in range(1000):
            srv.serve()
            if not srv.clients:
                break
        assert not srv.clients
    finally:
        srv.close()


def test_a_client_whose_request_the_agent_closes_on_is_told_it_was_refused(tmp_path):
    where = str(tmp_path / "closing.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(where)
    listener.listen(1)

    def refuse():  # as the control server does with a caller it does not allow
        conn, _ = listener.accept()
        conn.close()

    closer = threading.Thread(target=refuse, daemon=True)
    closer.start()
    try:
        with pytest.raises(Refused, match="not allowed to ask"):
            request(where, "report", {"pad": "x" * (4 << 20)})  # more than the socket takes before the close
    finally:
        closer.join(5)
        listener.close()
