"""The metrics endpoint of a live agent, scraped by Debian's real Prometheus with our rules."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import RunningAgent, alert_for, has_arg, marker, miner_command_line

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
sys.path.insert(0, str(DASHBOARDS))

import queries  # noqa: E402

PROMETHEUS_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Debian's prometheus on loopback, scraping one agent every second with our rules."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(queries.RULES)],
            "scrape_configs": [{"job_name": "ebpfguard", "static_configs": [{"targets": [target]}]}],
        }))
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + PROMETHEUS_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, Path(self.log.name).read_text()
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def query(self, promql: str) -> dict:
        """The API's answer (status, data or error) to an instant query."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:  # 400/422 carry the error in the body
            return json.load(err)

    def series(self, promql: str) -> list[dict]:
        answer = self.query(promql)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_for_series(self, promql: str, timeout: float = PROMETHEUS_TIMEOUT_S) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.series(promql)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(agent, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: run scripts/setup.sh --test")
    target = urllib.parse.urlsplit(agent.metrics_url).netloc
    server = Prometheus(tmp_path, target)
    yield server
    server.stop()


def test_prometheus_scrapes_the_agent_and_every_dashboard_and_rule_expression_evaluates(
        agent, make_cgroup, tmp_path, request):
    miner = tmp_path / "x"
    shutil.copy("/bin/sleep", miner)
    cg = make_cgroup("sandbox-")
    token = marker()
    cg.run(["sh", "-c", miner_command_line(miner, f"-p {token}")])
    alert = agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]))
    sandbox = cg.path.name

    # Prometheus starts after the alert: the alert's series is new at its first scrape,
    # which is the case the recording rule exists for.
    prom = request.getfixturevalue("prometheus")
    scraped = prom.wait_for_series('count_over_time(up{job="ebpfguard"}[5m]) >= 2')
    assert scraped, "prometheus did not scrape the agent twice"
    assert prom.series('up{job="ebpfguard"}')[0]["value"][1] == "1"

    written = [e for e in agent.events() if e["kind"] == "alert" and e["rule"] == "miner.exec"
               and e["sandbox"]["name"] == sandbox]  # `sh -c` with those arguments is flagged too
    counted = prom.series(f'ebpfguard_alerts_total{{rule="miner.exec",sandbox="{sandbox}"}}')
    assert [s["metric"]["severity"] for s in counted] == [alert["severity"]]
    assert float(counted[0]["value"][1]) == len(written)

    firing = prom.wait_for_series(f'ALERTS{{alertname="EbpfguardMinerDetected",sandbox="{sandbox}"}}')
    assert len(firing) == 1, firing
    labels = firing[0]["metric"]
    assert (labels["rule"], labels["severity"], labels["alertstate"]) == ("miner.exec", "critical", "firing")
    assert labels["instance"] == urllib.parse.urlsplit(agent.metrics_url).netloc

    # Recording rules need a few evaluations before every panel has data.
    prom.wait_for_series("ebpfguard:pipeline_latency_seconds:p99_5m")
    failures = {}
    for expr in queries.dashboard_queries(queries.load_dashboard()):
        answer = prom.query(expr)
        if answer["status"] != "success" or not answer["data"]["result"]:
            failures[expr] = answer.get("error", "no data")
    for name, expr in queries.rule_expressions(queries.load_rules()).items():
        answer = prom.query(expr)
        if answer["status"] != "success":
            failures[name] = answer["error"]
    assert failures == {}


def test_curl_of_the_endpoint_passes_promtool_check_metrics(agent):
    scraped = subprocess.run(["curl", "-sSf", agent.metrics_url], capture_output=True, text=True, timeout=30)
    assert scraped.returncode == 0, scraped.stderr
    assert "ebpfguard_build_info" in scraped.stdout
    checked = subprocess.run(["promtool", "check", "metrics"], input=scraped.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _sample(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_sandboxes_gauge_follows_a_process_living_and_exiting_in_a_sandbox(agent, make_cgroup):
    before = _sample(_scrape(agent.metrics_url), "ebpfguard_sandboxes")
    cg = make_cgroup("sandbox-")
    token = marker()
    proc = cg.popen(["sh", "-c", "exec sleep 30", token])
    try:
        agent.wait_for(has_arg(token))
        assert _sample(_scrape(agent.metrics_url), "ebpfguard_sandboxes") == before + 1
    finally:
        proc.kill()
        proc.wait()
    agent.wait_for(lambda e: e["kind"] == "exit" and e["process"]["pid"] == proc.pid)
    assert _sample(_scrape(agent.metrics_url), "ebpfguard_sandboxes") == before


def test_busy_metrics_port_is_a_clear_error_and_exit_2(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        ran = subprocess.run(
            [sys.executable, "-m", "ebpfguard", "run", "--output", str(tmp_path / "out.jsonl"),
             "--socket", "none", "--control-socket", "none", "--metrics-addr", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
        )
        took = time.monotonic() - started
    assert ran.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}: the port is in use" in ran.stderr
    assert "ready" not in ran.stderr.splitlines()
    print(f"busy port refused in {took:.2f}s")


def test_metrics_can_be_disabled(tmp_path):
    own = RunningAgent(tmp_path, ("--metrics-addr", "none"))
    try:
        assert "metrics on" not in own.stderr
    finally:
        assert own.stop() == 0, own.stderr[-4000:]
