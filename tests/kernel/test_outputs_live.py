"""A live agent's alerts reaching real receivers on loopback: Debian's Alertmanager (firing,
one alert however many times it is raised, resolved when the miners exit), Debian's rsyslog
(RFC 5424 with structured data over TCP), a Falco JSON lines file, and a webhook."""

from __future__ import annotations

import json
import re
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import WALLET, RunningAgent, alert_for, marker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from receivers import Alertmanager, HttpReceiver, Rsyslog, wait_until  # noqa: E402
from test_output_formats import falcosidekick_problems  # noqa: E402

RECEIVE_TIMEOUT_S = 30


class Fleet:
    """The receivers, and one agent whose config turns every output on."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.notifications = HttpReceiver().up()  # where Alertmanager sends firing/resolved
        self.alertmanager = Alertmanager(workdir, self.notifications.url)
        self.rsyslog = Rsyslog(workdir)
        self.webhook = HttpReceiver().up()
        self.falco_file = workdir / "falco.jsonl"
        headers = workdir / "webhook-headers"
        headers.write_text("Authorization: Bearer fleet-test-secret\n")
        config = workdir / "outputs.yaml"
        config.write_text(json.dumps({"outputs": {  # JSON is YAML
            "alertmanager": {"url": self.alertmanager.url, "resend_interval_s": 1.0, "labels": {"cluster": "test"},
                             "spool_dir": str(workdir / "spool"), "retry_initial_s": 0.2, "retry_max_s": 1.0},
            "falco": {"file": str(self.falco_file)},
            "syslog": {"address": f"tcp://127.0.0.1:{self.rsyslog.tcp_port}"},
            "webhook": {"url": self.webhook.url, "headers_file": str(headers), "spool_dir": str(workdir / "spool")},
        }}))
        agent_dir = workdir / "agent"
        agent_dir.mkdir()
        self.agent = RunningAgent(agent_dir, ("--config", str(config)))

    def stop(self) -> None:
        try:
            assert self.agent.stop() == 0, self.agent.stderr[-4000:]
        finally:
            self.alertmanager.stop()
            self.rsyslog.stop()
            self.webhook.down()
            self.notifications.down()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    running = Fleet(tmp_path_factory.mktemp("fleet"))
    yield running
    running.stop()


def start_miner(cg, tmp_path: Path, token: str):
    """A long-lived process that execs with an XMRig command line (a script that then becomes
    `sleep`, keeping its pid), so its alert lasts until it is killed."""
    script = tmp_path / "xmrig"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    script.chmod(0o755)
    return cg.popen([str(script), "-o", "stratum+tcp://pool.example.net:3333", "-u", WALLET, "-p", token,
                     "--donate-level", "1"])


def notification_statuses(receiver: HttpReceiver, sandbox: str) -> list[str]:
    statuses = []
    for body in receiver.bodies():
        message = json.loads(body)
        if any(a["labels"].get("sandbox") == sandbox for a in message["alerts"]):
            statuses.append(message["status"])
    return statuses


def test_a_sandboxed_miner_fires_once_in_alertmanager_and_resolves_when_it_ends(fleet, make_cgroup, tmp_path):
    cg = make_cgroup("sandbox-")
    sandbox = cg.path.name
    token = marker()
    first = start_miner(cg, tmp_path, token)
    second = None
    try:
        fleet.agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]))
        wait_until(lambda: fleet.alertmanager.alerts(sandbox=sandbox), RECEIVE_TIMEOUT_S, "the alert in Alertmanager")
        (held,) = fleet.alertmanager.alerts(sandbox=sandbox)
        assert held["labels"] == {"alertname": "miner.exec", "severity": "high", "sandbox": sandbox,
                                  "node": socket.gethostname(), "cluster": "test"}
        assert token in held["annotations"]["command_line"] and "binary" in held["annotations"]["evidence"]
        assert held["status"]["state"] == "active"

        # The same miner again in the same sandbox: a second alert from the agent, still one in
        # Alertmanager, kept firing by the re-sends (every second here).
        second = start_miner(cg, tmp_path, token)
        fleet.agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]
                                       and e["process"]["pid"] == second.pid))
        updated = held["updatedAt"]
        wait_until(lambda: fleet.alertmanager.alerts(sandbox=sandbox)[0]["updatedAt"] != updated,
                   RECEIVE_TIMEOUT_S, "a re-send")
        assert len(fleet.alertmanager.alerts(sandbox=sandbox)) == 1
        wait_until(lambda: "firing" in notification_statuses(fleet.notifications, sandbox), RECEIVE_TIMEOUT_S,
                   "Alertmanager's firing notification")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()
    # Both processes that raised it have exited: resolved.
    wait_until(lambda: not fleet.alertmanager.alerts(sandbox=sandbox), RECEIVE_TIMEOUT_S, "the alert resolved")
    wait_until(lambda: "resolved" in notification_statuses(fleet.notifications, sandbox), RECEIVE_TIMEOUT_S,
               "Alertmanager's resolved notification")
    assert notification_statuses(fleet.notifications, sandbox).count("firing") == 1


def test_the_same_alert_reaches_rsyslog_falco_lines_and_the_webhook_and_is_counted(fleet, make_cgroup, tmp_path):
    cg = make_cgroup("sandbox-")
    sandbox = cg.path.name
    token = marker()
    miner = start_miner(cg, tmp_path, token)
    try:
        alert = fleet.agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]))
    finally:
        miner.kill()
        miner.wait()

    wait_until(lambda: any(f'sandbox="{sandbox}"' in line for line in fleet.rsyslog.lines()), RECEIVE_TIMEOUT_S,
               "the alert in rsyslog")
    line = next(line for line in fleet.rsyslog.lines() if f'sandbox="{sandbox}"' in line)
    severity, facility, host, app, msgid, sd, _msg = line.split("|", 6)
    assert (severity, facility, app, msgid) == ("3", "16", "ebpfguard", "miner.exec")
    assert re.search(rf'pid="{alert["process"]["pid"]}"', sd) and token in sd

    def falco_lines() -> list[dict]:
        text = fleet.falco_file.read_text() if fleet.falco_file.exists() else ""
        return [json.loads(x) for x in text.splitlines() if sandbox in x]

    wait_until(falco_lines, RECEIVE_TIMEOUT_S, "the alert in the Falco lines")
    (falco,) = falco_lines()
    assert falcosidekick_problems(falco) == []
    assert falco["output_fields"]["proc.pid"] == alert["process"]["pid"] and falco["priority"] == "Error"

    def posted() -> list[dict]:
        return [json.loads(b) for b in fleet.webhook.bodies() if sandbox.encode() in b]

    wait_until(posted, RECEIVE_TIMEOUT_S, "the alert at the webhook")
    assert posted()[0] == alert
    headers = next(h for _, h, b in fleet.webhook.requests if sandbox.encode() in b)
    assert headers["Authorization"] == "Bearer fleet-test-secret"
    assert "fleet-test-secret" not in fleet.agent.stderr
    assert "fleet-test-secret" not in fleet.agent.output.read_text()


    # Each output counted what it delivered, and dropped nothing (counters reach the agent's
    # metrics within half a second).
    def metrics() -> str:
        with urllib.request.urlopen(fleet.agent.metrics_url, timeout=10) as response:
            return response.read().decode()

    def all_sent(text: str) -> bool:
        return all(float(m.group(1)) >= 1 for o in ("alertmanager", "falco", "syslog", "webhook")
                   for m in [re.search(rf'^ebpfguard_output_sent_total{{output="{o}"}} (\S+)$', text, re.M)] if m) \
            and text.count("ebpfguard_output_sent_total{") == 4

    wait_until(lambda: all_sent(metrics()), RECEIVE_TIMEOUT_S, "every output counted a delivery")
    text = metrics()
    for output in ("alertmanager", "falco", "syslog", "webhook"):
        for reason in ("queue_full", "spool_full", "rejected"):
            assert f'ebpfguard_output_dropped_total{{output="{output}",reason="{reason}"}} 0.0' in text
        assert re.search(rf'^ebpfguard_output_queue_depth{{output="{output}"}} ', text, re.MULTILINE)

def output_metric(agent: RunningAgent, name: str, output: str) -> float:
    with urllib.request.urlopen(agent.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    found = re.search(rf'^ebpfguard_output_{name}{{output="{output}"}} (\S+)$', metrics, re.MULTILINE)
    assert found, name
    return float(found.group(1))


def test_alerts_raised_while_alertmanager_is_down_are_spooled_and_arrive_in_order_when_it_is_back(
        fleet, make_cgroup, tmp_path):
    port = fleet.alertmanager.port
    fleet.alertmanager.stop()
    failed_before = output_metric(fleet.agent, "failed_total", "alertmanager")
    sandboxes = [make_cgroup("sandbox-") for _ in range(3)]
    miners = []
    try:
        for cg in sandboxes:  # three alerts, one per sandbox, while Alertmanager is down
            token = marker()
            miners.append(start_miner(cg, tmp_path, token))
            fleet.agent.wait_for(alert_for("miner.exec", lambda e, t=token: t in e["process"]["argv"]))
        wait_until(lambda: output_metric(fleet.agent, "queue_depth", "alertmanager") >= 3, RECEIVE_TIMEOUT_S,
                   "the alerts spooled")
        assert output_metric(fleet.agent, "failed_total", "alertmanager") > failed_before
        # In the order they were raised. A record is one POST's alerts: a periodic re-send
        # repeats alerts already there, and another rule may alert on a sandbox too, so what
        # is pinned is where each sandbox's miner.exec alert first appears.
        spooled = [(a["labels"]["alertname"], a["labels"]["sandbox"], a["endsAt"])
                   for record in _spool_records(fleet.workdir / "spool" / "alertmanager")
                   for a in json.loads(record[4:])]
        firsts = list(dict.fromkeys(box for rule, box, _ in spooled
                                    if rule == "miner.exec" and box in {cg.path.name for cg in sandboxes}))
        assert firsts == [cg.path.name for cg in sandboxes], f"spooled alerts: {spooled}"

        fleet.alertmanager = Alertmanager(fleet.workdir, fleet.notifications.url, port=port)
        for cg in sandboxes:
            try:
                wait_until(lambda cg=cg: fleet.alertmanager.alerts(sandbox=cg.path.name), RECEIVE_TIMEOUT_S,
                           "the spooled alert in Alertmanager")
            except AssertionError as missing:
                raise AssertionError(f"{missing}; {_delivery_state(fleet)}") from None
        wait_until(lambda: output_metric(fleet.agent, "queue_depth", "alertmanager") == 0, RECEIVE_TIMEOUT_S,
                   "the spool drained")
    finally:
        for proc in miners:
            proc.kill()
            proc.wait()


def _delivery_state(fleet: Fleet) -> str:
    """What to look at when an alert does not reach Alertmanager: the output's counters, what
    Alertmanager holds and notified, and the agent's last words."""
    counters = {name: output_metric(fleet.agent, name, "alertmanager")
                for name in ("sent_total", "failed_total", "queue_depth")}
    held = [(a["labels"].get("sandbox"), a["status"]["state"], a["endsAt"]) for a in fleet.alertmanager.alerts()]
    return (f"counters {counters}; Alertmanager holds {held}; notified {fleet.notifications.bodies()[-5:]}; "
            f"agent stderr: {fleet.agent.stderr_path.read_text()[-3000:]}")


def _spool_records(directory: Path) -> list[bytes]:
    """The spool's records as on disk (a 4-byte length, then the payload), oldest first."""
    records = []
    for segment in sorted(directory.glob("*.seg")):
        data, at = segment.read_bytes(), 0
        while at + 4 <= len(data):
            size = int.from_bytes(data[at:at + 4], "big")
            records.append(data[at:at + 4 + size])
            at += 4 + size
    return records
