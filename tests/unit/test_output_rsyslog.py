"""The syslog output against Debian's real rsyslog (foreground, temp config, loopback ports and
a socket in tmp_path; the host's syslog is never touched): the alert line arrives with its
structured data over UDP, TCP (octet-counted) and a local socket."""

from __future__ import annotations

import pytest

from ebpfguard.outputs.delivery import Delivery, MemorySpool, OutputCounters, Retry
from ebpfguard.outputs.syslog import SyslogAddress, SyslogFormat, SyslogSender
from receivers import Rsyslog, wait_until

ALERT = {
    "kind": "alert", "time": "2026-11-29T21:00:00.123456789Z", "node": "gpu-node-7", "rule": "miner.stratum",
    "severity": "high", "summary": "stratum1 mining.subscribe on a flow", "tags": ["T1496"],
    "sandbox": {"name": "sandbox-rl-42", "runtime": "pattern"},
    "process": {"pid": 4242, "comm": "xmrig", "exe": "/tmp/xmrig",
                "argv": ["/tmp/xmrig", "-o", 'pool"]\\', "two\nlines"]},
    "evidence": {"variant": "stratum1", "method": "mining.subscribe", "dport": 3333},
}


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory):
    server = Rsyslog(tmp_path_factory.mktemp("rsyslog"))
    yield server
    server.stop()


def address(rsyslog: Rsyslog, transport: str) -> str:
    return {"udp": f"udp://127.0.0.1:{rsyslog.udp_port}", "tcp": f"tcp://127.0.0.1:{rsyslog.tcp_port}",
            "unix": f"unix://{rsyslog.socket_path}"}[transport]


@pytest.mark.parametrize("transport", ["udp", "tcp", "unix"])
def test_the_alert_line_arrives_in_rsyslog_with_its_structured_data(rsyslog, transport):
    marker = f"sandbox-{transport}-marker"
    alert = {**ALERT, "sandbox": {**ALERT["sandbox"], "name": marker}}
    out = Delivery("syslog", SyslogFormat("info", "local3", "ebpfguard", 2048),
                   SyslogSender(SyslogAddress.parse(address(rsyslog, transport)), 5.0), queue_size=10,
                   backlog=MemorySpool(10), retry=Retry(0.05, 0.2), counters=OutputCounters("syslog"),
                   warn=[].append).start()
    out.offer(alert)
    out.offer({**alert, "kind": "exec"})  # not an alert: not sent
    wait_until(lambda: any(marker in line for line in rsyslog.lines()), 20, f"the alert in rsyslog over {transport}")
    out.stop()
    out.join(5)
    (line,) = [line for line in rsyslog.lines() if marker in line]
    severity, facility, host, app, msgid, sd, msg = line.split("|", 6)
    assert (severity, facility, host, app, msgid) == ("3", "19", "gpu-node-7", "ebpfguard", "miner.stratum")
    assert sd.startswith("[ebpfguard@32473 ") and f'sandbox="{marker}"' in sd
    assert 'rule="miner.stratum"' in sd and 'severity="high"' in sd and 'pid="4242"' in sd
    assert "cmdline=\"/tmp/xmrig -o 'pool\\\"\\]\\\\' 'two\\\\x0alines'\"" in sd
    assert 'evidence="dport=3333; method=mining.subscribe; variant=stratum1"' in sd
    assert msg == f"stratum1 mining.subscribe on a flow (sandbox {marker})"
    assert out.counters.snapshot().sent == 1


def test_tcp_reconnects_after_rsyslog_restarts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Rsyslog(tmp_path / "a")
    sender = SyslogSender(SyslogAddress.parse(f"tcp://127.0.0.1:{first.tcp_port}"), 5.0)
    fmt = SyslogFormat("info", "local0", "ebpfguard", 2048)
    sender(fmt.payloads({**ALERT, "summary": "before restart"}, 0)[0])
    wait_until(lambda: any("before restart" in line for line in first.lines()), 20, "first message")
    first.stop()
    second = Rsyslog(tmp_path / "b", tcp_port=first.tcp_port)
    try:
        sender(fmt.payloads({**ALERT, "summary": "after restart"}, 0)[0])
        wait_until(lambda: any("after restart" in line for line in second.lines()), 20, "message after the restart")
    finally:
        second.stop()
