"""DNS questions and TLS server names from the wire, and miner.pool without resolving anything.

The DNS responder and its client live in a network namespace the test makes; the TLS client
talks to a listener on loopback. No packet leaves loopback or the test's namespaces."""

import json
import re
import socket
import subprocess
import sys
import textwrap

from conftest import RunningAgent, alert_for, marker
from netns import enter, isolated_netns
from test_flow_events import EchoServer

RESOLVER = "10.53.0.53"

RESPONDER = textwrap.dedent("""
    import socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 53))
    print("up", flush=True)
    while True:
        query, peer = s.recvfrom(512)
        end = query.index(b"\\0", 12) + 5           # the question: name, type, class
        header = query[:2] + b"\\x81\\x80" + b"\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x00"
        answer = b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([10, 53, 0, 99])
        s.sendto(header + query[12:end] + answer, peer)
""")

CLIENT = textwrap.dedent("""
    import os, socket, struct, sys
    name = sys.argv[1]
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
    query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(query, (sys.argv[2], 53))
    reply = s.recv(512)
    print(os.getpid(), socket.inet_ntoa(reply[-4:]), flush=True)
""")


def query_from_sandbox(cg, ns, name):
    """Ask the namespace's responder for `name` from a process in the sandbox; its pid."""
    out = subprocess.run([sys.executable, "-c", CLIENT, name, RESOLVER],
                         preexec_fn=lambda: (cg.enter(), enter(ns)), capture_output=True, text=True,
                         check=True, timeout=20)
    pid, address = out.stdout.split()
    assert address == "10.53.0.99"
    return int(pid)


def test_dns_query_from_a_sandbox_is_an_event_and_a_pool_name_raises_miner_pool(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    benign = f"{marker()}.example.com"
    with isolated_netns(f"{RESOLVER}/32") as ns:
        responder = subprocess.Popen([sys.executable, "-c", RESPONDER, RESOLVER],
                                     preexec_fn=lambda: enter(ns), stdout=subprocess.PIPE, text=True)
        try:
            assert responder.stdout.readline().strip() == "up"
            benign_pid = query_from_sandbox(cg, ns, benign)
            pool_pid = query_from_sandbox(cg, ns, "xmr-eu1.nanopool.org")
        finally:
            responder.kill()
            responder.wait()
    question = agent.wait_for(lambda e: e["kind"] == "dns" and e["process"]["pid"] == benign_pid
                              and e["direction"] == "egress")
    assert (question["query"], question["qtype"]) == (benign, "A")
    assert question["sandbox"]["name"] == cg.path.name and question["daddr"] == RESOLVER
    answer = agent.wait_for(lambda e: e["kind"] == "dns" and e["process"]["pid"] == benign_pid
                            and e["direction"] == "ingress")
    assert answer["answers"][0]["value"] == "10.53.0.99"
    alert = agent.wait_for(alert_for("miner.pool", lambda e: e["process"]["pid"] == pool_pid))
    assert alert["evidence"]["matched"] == "nanopool.org" and alert["sandbox"]["name"] == cg.path.name
    assert not [e for e in agent.events() if e["kind"] == "alert" and e["rule"] == "miner.pool"
                and e["event"]["process"]["pid"] == benign_pid]


TLS_CLIENT = textwrap.dedent("""
    import os, socket, ssl, sys
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    try:
        ctx.wrap_socket(raw, server_hostname=sys.argv[1])
    except (ssl.SSLError, OSError):
        pass  # the listener is no TLS server: the ClientHello is what we wanted on the wire
    print(os.getpid(), flush=True)
""")


def test_tls_client_hello_with_a_pool_name_yields_sni_and_miner_pool(agent, make_cgroup):
    srv = EchoServer(reply=b"\x15\x03\x03\x00\x02\x02\x28")  # a TLS alert: handshake failure
    try:
        cg = make_cgroup("sandbox-")
        out = cg.run([sys.executable, "-c", TLS_CLIENT, "gulf.moneroocean.stream", str(srv.port)],
                     capture_output=True, text=True, check=True, timeout=20)
        pid = int(out.stdout)
        flow = agent.wait_for(lambda e: e["kind"] == "flow" and e["process"]["pid"] == pid and "sni" in e)
        alert = agent.wait_for(alert_for("miner.pool", lambda e: e["process"]["pid"] == pid))
    finally:
        srv.close()
    assert flow["sni"] == "gulf.moneroocean.stream" and flow["dport"] == srv.port
    # The client connected to a bare address: no DNS answer this sandbox received named it.
    assert flow["dns_named"] is False
    assert alert["evidence"]["source"] == "sni" and alert["evidence"]["matched"] == "moneroocean.stream"
    assert alert["sandbox"]["name"] == cg.path.name


def test_malformed_dns_packet_is_counted_not_fatal(tmp_path):
    own = RunningAgent(tmp_path, ("--socket", "none"))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\x0c", ("127.0.0.1", 53))  # a pointer loop
        token = marker()
        subprocess.run(["/bin/true", token])
        own.wait_for(lambda e: e["kind"] == "exec" and token in e["process"]["argv"])
    finally:
        assert own.stop() == 0
    summary = json.loads(re.search(r"ebpfguard: stopped: (\{.*\})", own.stderr).group(1))
    assert summary["dropped"].get("enrich/dns_malformed", 0) >= 1
