"""The fleet configuration files of docs/fleet.md, checked by the tools that read them:
amtool (syntax and routing), a real Alertmanager (inhibition), promtool (federation and
remote-write), and the deployments' room for the output spool."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from ebpfguard.config import load_config
from receivers import Alertmanager, HttpReceiver, need, wait_until

REPO = Path(__file__).resolve().parents[2]
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_alertmanager_config_passes_amtool_check_config():
    result = run(need("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout


@pytest.mark.parametrize("labels, receivers", [
    ({"alertname": "miner.stratum", "severity": "high", "sandbox": "sandbox-rl-1"}, "security-oncall,security-chat"),
    ({"alertname": "tunnel.other", "severity": "critical", "sandbox": "sandbox-ci-9"}, "security-oncall,security-chat"),
    ({"alertname": "miner.pool", "severity": "medium", "sandbox": "sandbox-rl-1"}, "security-chat"),
    ({"alertname": "gpu.use", "severity": "low", "sandbox": "sandbox-rl-1"}, "security-log"),
    ({"alertname": "miner.stratum", "severity": "high", "sandbox": "sandbox-mining-research-3"}, "research-team"),
])
def test_alerts_are_routed_by_severity_and_sandbox(labels, receivers):
    result = run(need("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}",
                 *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_miner_pool_is_inhibited_by_miner_stratum_on_the_same_sandbox_in_a_real_alertmanager(tmp_path):
    hook = HttpReceiver().up()
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    # The shipped routes and inhibit rules, with every receiver sent to loopback.
    for receiver in config["receivers"]:
        receiver["webhook_configs"] = [{"url": hook.url}]
    am = None
    try:
        am = Alertmanager(tmp_path, hook.url, config=config)
        node = {"node": "gpu-7", "cluster": "west"}
        post = [
            {"labels": {"alertname": "miner.stratum", "severity": "high", "sandbox": "sandbox-a", **node}},
            {"labels": {"alertname": "miner.pool", "severity": "medium", "sandbox": "sandbox-a", **node}},
            {"labels": {"alertname": "miner.pool", "severity": "medium", "sandbox": "sandbox-b", **node}},
        ]
        request = urllib.request.Request(f"{am.url}/api/v2/alerts", data=json.dumps(post).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=5).close()

        def pool_states() -> dict:
            return {a["labels"]["sandbox"]: a["status"]["state"] for a in am.alerts(alertname="miner.pool")}

        wait_until(lambda: pool_states() == {"sandbox-a": "suppressed", "sandbox-b": "active"}, 30,
                   f"miner.pool inhibited on sandbox-a only ({pool_states()})")
        (inhibited,) = [a for a in am.alerts(alertname="miner.pool") if a["labels"]["sandbox"] == "sandbox-a"]
        assert inhibited["status"]["inhibitedBy"]
    finally:
        if am is not None:
            am.stop()
        hook.down()


@pytest.mark.parametrize("name", ["federation.yml", "remote-write.yml"])
def test_prometheus_fleet_configs_pass_promtool(name):
    result = run(need("promtool"), "check", "config", str(PROMETHEUS_DIR / name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_daemonset_mounts_the_default_spool_directory_from_the_host():
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "daemonset.yaml").read_text()))
    spec = next(d for d in docs if d and d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    (agent,) = [c for c in spec["containers"] if c["name"] == "agent"]
    spool_dir = load_config()["outputs"]["alertmanager"]["spool_dir"]
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    mount = next(m for path, m in mounts.items() if spool_dir.startswith(path + "/") or spool_dir == path)
    assert not mount.get("readOnly")
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "hostPath" in volume  # survives the pod: a restarted agent delivers what the last one spooled


def test_the_systemd_unit_gives_the_agent_its_spool_directory_under_protect_system():
    unit = (REPO / "deploy" / "systemd" / "ebpfguard.service").read_text()
    assert "ProtectSystem=strict" in unit and "StateDirectory=ebpfguard" in unit
    assert load_config()["outputs"]["webhook"]["spool_dir"].startswith("/var/lib/ebpfguard/")
