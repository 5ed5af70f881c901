"""miner.stratum from real flows: a stratum server written here, clients in sandbox cgroups."""


import pytest
from conftest import WALLET, alert_for
from test_flow_events import EchoServer, talk

OK = b'{"id":1,"result":true,"error":null}\n'

# What real miners send first (newline-delimited JSON-RPC), per variant.
CLIENT_HELLOS = {
    "stratum1": ['{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\\n',
                 '{"params": ["bc1qworker.rig1", "x"], "id": 2, "method": "mining.authorize"}\\n'],
    "ethproxy": ['{"id":1,"jsonrpc":"2.0","method":"eth_submitLogin","params":'
                 '["0x52bc44d5378309ee2abf1539bf71de1b7d7be3b5","x"],"worker":"rig1"}\\n'],
    "nicehash": ['{"id": 1, "method": "mining.subscribe", "params": ["ethminer/0.19.0", "EthereumStratum/1.0.0"]}\\n'],
    "monero": ['{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"' + WALLET + '","pass":"x",'
               '"agent":"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/12.2.0","algo":["rx/0"]}}\\n'],
    # EIP-1571 as ethminer sends it: no jsonrpc member.
    "ethstratum2": ['{"id":0,"method":"mining.hello","params":{"agent":"ethminer-0.19.0","host":"eth.pool.example",'
                    '"port":"4d2","proto":"EthereumStratum/2.0.0"}}\\n'],
    # Grin's stratum (doc/stratum.md in mimblewimble/grin): login, then a job request.
    "grin": ['{"id":"0","jsonrpc":"2.0","method":"login","params":{"login":"rig1","pass":"x","agent":"grin-miner"}}\\n',
             '{"id":"1","jsonrpc":"2.0","method":"getjobtemplate","params":null}\\n'],
}

POOL_NOTIFY = (b'{"id":null,"method":"mining.set_difficulty","params":[16384]}\n'
               b'{"id":null,"method":"mining.notify","params":["bf","4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",'
               b'"01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008",'
               b'"072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000",'
               b'[],"00000002","1c2ac4af","504e86b9",false]}\n')


def stratum_alerts_in(agent, cg):
    return [e for e in agent.events() if e["kind"] == "alert" and e["rule"] == "miner.stratum"
            and e["sandbox"]["cgroup"] == cg.rel]


def settle(agent, cg, srv):
    """Wait until a later flow from the same sandbox is in: nothing before it is in flight."""
    pid = talk(cg, "4", srv.port, '{"id":9,"method":"ping"}\\n')
    agent.wait_for(lambda e: e["kind"] == "flow" and e["process"]["pid"] == pid)


@pytest.mark.parametrize("variant", sorted(CLIENT_HELLOS))
@pytest.mark.parametrize("port", [8443, 0], ids=["port-8443", "random-port"])
def test_each_variant_is_one_alert_with_sandbox_pid_variant_and_port(agent, make_cgroup, variant, port):
    srv = EchoServer(reply=OK, port=port)
    try:
        cg = make_cgroup("sandbox-")
        pid = talk(cg, "4", srv.port, *CLIENT_HELLOS[variant])
        alert = agent.wait_for(alert_for("miner.stratum", lambda e: e["process"]["pid"] == pid))
        settle(agent, cg, srv)
    finally:
        srv.close()
    assert alert["sandbox"]["name"] == cg.path.name
    assert alert["evidence"]["variant"] == variant
    assert alert["evidence"]["dport"] == srv.port
    assert len(stratum_alerts_in(agent, cg)) == 1


def test_ipv6_loopback_flow_is_caught(agent, make_cgroup):
    srv = EchoServer(family="6", reply=OK)
    try:
        cg = make_cgroup("sandbox-")
        pid = talk(cg, "6", srv.port, *CLIENT_HELLOS["monero"])
        alert = agent.wait_for(alert_for("miner.stratum", lambda e: e["process"]["pid"] == pid))
    finally:
        srv.close()
    assert alert["evidence"]["daddr"] == "::1" and alert["sandbox"]["name"] == cg.path.name


def test_pool_reply_alone_is_caught(agent, make_cgroup):
    srv = EchoServer(reply=POOL_NOTIFY)
    try:
        cg = make_cgroup("sandbox-")
        pid = talk(cg, "4", srv.port, '{"id":1,"method":"status","params":[]}\\n')
        alert = agent.wait_for(alert_for("miner.stratum", lambda e: e["process"]["pid"] == pid))
    finally:
        srv.close()
    assert alert["evidence"]["direction"] == "ingress" and alert["evidence"]["variant"] == "stratum1"


BENIGN = {
    "electrum": ['{"id": 0, "method": "server.version", "params": ["electrum", "1.4"]}\\n'],
    "json-rpc": ['{"jsonrpc":"2.0","id":1,"method":"login","params":{"user":"alice","password":"x"}}\\n'],
    "lsp": ['Content-Length: 52\\r\\n\\r\\n{"jsonrpc":"2.0","id":1,"method":"initialize"}'],
    "eth-node-http": ['POST / HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: 64\\r\\n\\r\\n'
                      '{"jsonrpc":"2.0","method":"eth_getWork","params":[],"id":1}'],
    "redis": ['*1\\r\\n$4\\r\\nPING\\r\\n'],
}


@pytest.mark.parametrize("client", sorted(BENIGN))
def test_benign_clients_raise_no_alert(agent, make_cgroup, client):
    srv = EchoServer(reply=b'{"jsonrpc":"2.0","id":1,"result":"ok"}\n')
    try:
        cg = make_cgroup("sandbox-")
        talk(cg, "4", srv.port, *BENIGN[client])
        settle(agent, cg, srv)
    finally:
        srv.close()
    assert stratum_alerts_in(agent, cg) == []
