"""The first bytes of flows, from cgroup_skb hooks, attributed to the socket's creator."""

import base64
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import marker

CLIENT = textwrap.dedent("""
    import os, socket, sys
    family, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    messages = [m.encode().decode("unicode_escape").encode("latin-1") for m in sys.argv[4:]]
    s = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET)
    s.connect((host, port))
    for m in messages:
        s.sendall(m)
        s.recv(65536)
    print(os.getpid(), flush=True)
""")


class EchoServer:
    """Answers every segment it reads with `reply` (or echoes), on loopback."""

    def __init__(self, family="4", reply=None, port=0):
        af = socket.AF_INET6 if family == "6" else socket.AF_INET
        self.sock = socket.socket(af)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("::1" if family == "6" else "127.0.0.1", port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(self.reply or data)
            except OSError:
                continue  # a client that reset its connection: serve the next one

    def close(self):
        # shutdown wakes the thread blocked in accept(), which otherwise keeps the port bound
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def server():
    made = []

    def make(**kwargs):
        made.append(EchoServer(**kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


def talk(cg, family, port, *messages):
    host = "::1" if family == "6" else "127.0.0.1"
    out = cg.run([sys.executable, "-c", CLIENT, family, host, str(port), *messages],
                 capture_output=True, text=True, check=True, timeout=20)
    return int(out.stdout)


def flows_of(agent, pid):
    return [e for e in agent.events() if e["kind"] == "flow" and e["process"]["pid"] == pid]


@pytest.mark.parametrize("family", ["4", "6"])
def test_json_rpc_flow_is_captured_both_ways_with_sandbox_pid_and_destination(agent, make_cgroup, server, family):
    srv = server(family=family, reply=b'{"id":1,"result":true}\n')
    cg = make_cgroup("sandbox-")
    token = marker()
    pid = talk(cg, family, srv.port, f'{{"id":1,"method":"{token}"}}\\n')
    egress = agent.wait_for(lambda e: e["kind"] == "flow" and e["process"]["pid"] == pid and e["direction"] == "egress")
    ingress = agent.wait_for(lambda e: e["kind"] == "flow" and e["process"]["pid"] == pid and e["direction"] == "ingress")
    assert base64.b64decode(egress["payload_b64"]) == f'{{"id":1,"method":"{token}"}}\n'.encode()
    assert base64.b64decode(ingress["payload_b64"]) == b'{"id":1,"result":true}\n'
    for e in (egress, ingress):
        assert e["dport"] == srv.port and e["daddr"] == ("::1" if family == "6" else "127.0.0.1")
        assert e["sandbox"]["name"] == cg.path.name and e["flow_id"] == egress["flow_id"]
    assert egress["seq"] == 0 and ingress["seq"] == 0


def test_only_the_first_segments_of_a_flow_are_sent(agent, make_cgroup, server):
    srv = server(reply=b"{}\n")
    cg = make_cgroup("sandbox-")
    pid = talk(cg, "4", srv.port, *[f'{{"n":{i}}}\\n' for i in range(8)])
    agent.wait_for(lambda e: e["kind"] == "flow" and e["process"]["pid"] == pid and e["seq"] == 3)
    marker_pid = talk(cg, "4", srv.port, "{}\\n")  # a later flow: everything before it is in
    agent.wait_for(lambda e: e["kind"] == "flow" and e["process"]["pid"] == marker_pid)
    egress = [e for e in flows_of(agent, pid) if e["direction"] == "egress"]
    assert sorted(e["seq"] for e in egress) == [0, 1, 2, 3]


def test_http_and_bulk_flows_are_not_sent(agent, make_cgroup, server):
    srv = server()
    cg = make_cgroup("sandbox-")
    pid = talk(cg, "4", srv.port, "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", '{"late": 1}\\n')
    bulk = subprocess.run(  # 60 kB in one write: many segments, none JSON
        [sys.executable, "-c", CLIENT, "4", "127.0.0.1", str(srv.port), "A" * 60000],
        preexec_fn=cg.enter, capture_output=True, text=True, check=True)
    later = talk(cg, "4", srv.port, "{}\\n")
    agent.wait_for(lambda e: e["kind"] == "flow" and e["process"]["pid"] == later)
    assert flows_of(agent, pid) == []
    assert flows_of(agent, int(bulk.stdout)) == []
