"""Through a local relay: a sandbox reaching a stratum pool through an HTTP CONNECT proxy on
the host's loopback gets the miner.stratum alert of the proxy's flow named after it."""

from __future__ import annotations

import subprocess
import sys

from conftest import WALLET, alert_for
from test_flow_events import EchoServer

# A minimal HTTP CONNECT proxy, a host process: prints its port, relays one connection, and
# keeps listening (a relay outlives its clients) until the test ends it.
PROXY = r"""
import socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4)
print(srv.getsockname()[1], flush=True)
client, _ = srv.accept()
request = b""
while b"\r\n\r\n" not in request:
    request += client.recv(4096)
host, port = request.split()[1].decode().rsplit(":", 1)
upstream = socket.create_connection((host, int(port)))
client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
def pipe(a, b):
    while data := a.recv(65536):
        b.sendall(data)
threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
pipe(client, upstream)
threading.Event().wait()
"""

# The sandbox's miner: CONNECT through the proxy, then a Monero login.
CLIENT = r"""
import socket, sys
proxy, pool, wallet = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.create_connection(("127.0.0.1", proxy))
s.sendall(f"CONNECT 127.0.0.1:{pool} HTTP/1.1\r\nHost: 127.0.0.1:{pool}\r\n\r\n".encode())
assert s.recv(4096).startswith(b"HTTP/1.1 200")
s.sendall(('{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"' + wallet +
           '","pass":"x","agent":"XMRig/6.21.0"}}\n').encode())
s.recv(4096)
"""


def test_a_miner_behind_a_host_connect_proxy_is_named_by_its_sandbox(agent, make_cgroup):
    pool = EchoServer(reply=b'{"id":1,"jsonrpc":"2.0","error":null,"result":{"status":"OK"}}\n')
    proxy = subprocess.Popen([sys.executable, "-c", PROXY], stdout=subprocess.PIPE, text=True)
    try:
        proxy_port = int(proxy.stdout.readline())
        cg = make_cgroup("sandbox-")
        cg.run([sys.executable, "-c", CLIENT, str(proxy_port), str(pool.port), WALLET], check=True, timeout=30)
        alert = agent.wait_for(alert_for("miner.stratum", lambda e: e["process"]["pid"] == proxy.pid))
    finally:
        proxy.kill()
        proxy.wait()
        pool.close()
    assert alert["sandbox"]["name"] == cg.path.name
    via = alert["evidence"]["via"]
    assert via["relay"]["pid"] == proxy.pid
    assert via["connection"]["sandbox"] == cg.path.name and via["connection"]["dport"] == proxy_port
    assert alert["event"]["sandbox"]["name"] == "host"  # the flow itself stays the relay's
