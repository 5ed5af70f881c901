"""What an alert's actions act on, and the guards that keep them off host and off the agent."""

import pytest

from ebpfguard.config import load_config
from ebpfguard.respond.cgroups import sandbox_root_path
from ebpfguard.respond.config import parse_response
from ebpfguard.respond.plan import Self, destinations_of, plan
from ebpfguard.respond.responder import DnsAnswers, Responder

KINDS = {"miner.stratum": ("flow",), "miner.pool": ("dns", "flow", "connect"), "tunnel.other": ("exec",)}
AGENT = Self(pid=100, ancestors=frozenset({1, 50}), cgroup="/system.slice/ebpfguard.service")
SETTINGS = load_config()["sandbox"]


def config(**response):
    section = {**load_config()["response"], "mode": "enforce", **response}
    return parse_response(section, KINDS, None)


def alert(rule="miner.stratum", sandbox="sandbox-a", cgroup="/sandbox-a/job", pid=4242, event=None):
    event = event or {"kind": "flow", "flow_id": 77, "daddr": "127.0.0.1", "dport": 3333, "time": "2026-01-01T00:00:00Z"}
    return {"kind": "alert", "rule": rule, "time": event.get("time"), "summary": "s",
            "sandbox": {"name": sandbox, "cgroup": cgroup}, "process": {"pid": pid, "comm": "xmrig"}, "event": event}


def test_block_flow_targets_the_socket_the_flow_names():
    planned = plan(alert(), "block-flow", config(), AGENT, "/sandbox-a")
    assert planned.outcome is None
    assert planned.target == {"sandbox": "sandbox-a", "flow_id": 77, "daddr": "127.0.0.1", "dport": 3333}


def test_a_connect_names_its_socket_and_destination():
    event = {"kind": "connect", "sock_cookie": 9, "daddr": "::1", "dport": 22}
    assert plan(alert(event=event), "block-flow", config(), AGENT, "/sandbox-a").target["flow_id"] == 9
    assert destinations_of(event) == [("::1", 22)]


def test_an_alert_without_a_flow_skips_block_flow_with_the_reason():
    planned = plan(alert(event={"kind": "exec"}), "block-flow", config(), AGENT, "/sandbox-a")
    assert (planned.outcome, planned.reason) == ("skipped", "the alert names no flow")


def test_dns_answers_are_destinations_on_every_port():
    event = {"kind": "dns", "answers": [{"name": "p.example", "type": "CNAME", "value": "q.example"},
                                        {"name": "q.example", "type": "A", "value": "192.0.2.7"},
                                        {"name": "q.example", "type": "AAAA", "value": "2001:db8::7"}]}
    assert destinations_of(event) == [("192.0.2.7", 0), ("2001:db8::7", 0)]


def test_host_is_refused_unless_listed_by_name():
    host_alert = alert(sandbox="host", cgroup="/user.slice/session-1.scope")
    refused = plan(host_alert, "freeze", config(sandboxes=["*"]), AGENT, "/user.slice/session-1.scope")
    assert refused.outcome == "refused" and "host" in refused.reason
    allowed = plan(host_alert, "freeze", config(sandboxes=["host"]), AGENT, "/user.slice/session-1.scope")
    assert allowed.outcome is None and allowed.target["cgroup"] == "/user.slice/session-1.scope"


def test_sandboxes_not_listed_are_refused():
    planned = plan(alert(sandbox="agent-b"), "freeze", config(sandboxes=["sandbox-*"]), AGENT, "/agent-b")
    assert planned.outcome == "refused" and "response.sandboxes" in planned.reason


@pytest.mark.parametrize("root", ["/system.slice/ebpfguard.service", "/system.slice", "/"])
def test_the_agents_own_cgroup_and_those_above_it_are_never_frozen(root):
    planned = plan(alert(sandbox="host", cgroup=root), "freeze", config(sandboxes=["host"]), AGENT, root)
    assert planned.outcome == "refused" and ("agent" in planned.reason or "root cgroup" in planned.reason)


def test_a_flow_in_the_agents_own_cgroup_is_refused_and_one_elsewhere_on_host_is_not():
    own = alert(sandbox="host", cgroup=AGENT.cgroup)
    assert plan(own, "block-flow", config(sandboxes=["host"]), AGENT, AGENT.cgroup).outcome == "refused"
    other = alert(sandbox="host", cgroup="/")
    assert plan(other, "block-flow", config(sandboxes=["host"]), AGENT, "/").outcome is None


@pytest.mark.parametrize("pid", [100, 50, 1])
def test_the_agent_and_its_parents_are_never_killed(pid):
    planned = plan(alert(pid=pid), "kill", config(), AGENT, "/sandbox-a")
    assert planned.outcome in ("refused", "skipped")


def test_a_sandbox_root_is_its_outermost_cgroup():
    assert sandbox_root_path("/sandbox-a/job/sandbox-b", SETTINGS) == "/sandbox-a"
    assert sandbox_root_path("/ci.slice/agent-7/x", SETTINGS) == "/ci.slice/agent-7"
    pod = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_1111_2222_3333_444455556666.slice"
    assert sandbox_root_path(pod + "/cri-containerd-" + "a" * 64 + ".scope", SETTINGS) == pod


def test_dns_answers_are_remembered_per_sandbox_and_name():
    answers = DnsAnswers(max_names=2)
    answers.learn({"kind": "dns", "sandbox": {"name": "sandbox-a"}, "query": "pool.example.",
                   "answers": [{"name": "pool.example", "type": "A", "value": "192.0.2.1"}]})
    assert answers.addresses("sandbox-a", "Pool.Example") == ["192.0.2.1"]
    assert answers.addresses("sandbox-b", "pool.example") == []


def test_dry_run_writes_the_would_be_action_and_holds_nothing(tmp_path):
    (tmp_path / "sandbox-a" / "job").mkdir(parents=True)
    written = []
    responder = Responder(config(mode="dry-run", rules={"miner.stratum": ["block-flow", "freeze"]}),
                          SETTINGS, str(tmp_path), None, written.append, "node")
    responder.on_alert(alert())
    assert [(e["action"], e["outcome"], e["mode"]) for e in written] == [
        ("block-flow", "dry-run", "dry-run"), ("freeze", "dry-run", "dry-run")]
    assert written[1]["target"] == {"sandbox": "sandbox-a", "cgroup": "/sandbox-a"}
    assert written[0]["alert"]["rule"] == "miner.stratum" and written[0]["delay_ms"] > 0
    assert (tmp_path / "sandbox-a" / "cgroup.freeze").exists() is False
    assert responder.listing()["in_force"] == []
