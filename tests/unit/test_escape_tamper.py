"""sandbox.escape and agent.tamper: the detectors over `escape`/`tamper` events, the events
built from kernel records, and the engine raising them as critical alerts."""

from __future__ import annotations

from enrich_env import KTIME, FixedClock, fake_host
from shipped_rules import context_for

from ebpfguard.config import load_config
from ebpfguard.detect.agent_tamper import AgentTamper
from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.sandbox_escape import SandboxEscape
from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.guard import GuardEvents, namespace_names
from ebpfguard.enrich.sandbox_cache import SandboxCache
from ebpfguard.kernel.events import GuardRecord, Header

ESCAPE = SandboxEscape(context_for("sandbox.escape"))
TAMPER = AgentTamper(context_for("agent.tamper"))


def event(kind: str, what: str, sandbox: str = "sandbox-a", **fields) -> dict:
    return {"kind": kind, "what": what, "sandbox": {"name": sandbox, "cgroup": f"/{sandbox}"},
            "process": {"pid": 10}, **fields}


def test_a_move_out_of_the_sandbox_says_from_where_to_where():
    [finding] = ESCAPE.on_event(event("escape", "cgroup_move", target_pid=10, to_cgroup="/",
                                      to_sandbox="host", target_sandbox="sandbox-a"))
    assert finding.summary == "moved itself out of sandbox sandbox-a into cgroup /"
    assert finding.evidence["from"] == "sandbox-a" and finding.evidence["to_cgroup"] == "/"


def test_a_move_into_a_child_cgroup_named_like_another_sandbox_is_no_escape():
    assert not list(ESCAPE.on_event(event("escape", "cgroup_move", target_pid=10,
                                          to_cgroup="/sandbox-a/sandbox-b", to_sandbox="sandbox-a")))


def test_namespace_mount_and_escape_path_attempts_are_findings():
    assert list(ESCAPE.on_event(event("escape", "unshare", namespaces=["net"])))[0].evidence["namespaces"] == ["net"]
    assert list(ESCAPE.on_event(event("escape", "setns", namespaces=["mount"], target="mnt:[4026531841]")))
    mount = list(ESCAPE.on_event(event("escape", "mount", target="/mnt", fstype="cgroup")))[0]
    assert mount.evidence == {"what": "mount", "from": "sandbox-a", "to": "/mnt", "fstype": "cgroup"}
    path = list(ESCAPE.on_event(event("escape", "path_write", filename="/sys/fs/cgroup/x/release_agent")))[0]
    assert path.evidence["to"] == "/sys/fs/cgroup/x/release_agent"


def test_the_host_raises_neither_rule():
    assert not list(ESCAPE.on_event(event("escape", "unshare", sandbox="host", namespaces=["net"])))
    assert not list(TAMPER.on_event(event("tamper", "bpf", sandbox="host", bpf_cmd="BPF_PROG_LOAD")))


def test_tamper_names_what_was_acted_on():
    [signal] = TAMPER.on_event(event("tamper", "signal", target_pid=4242, signal="SIGKILL", target="agent"))
    assert signal.summary == "signal SIGKILL sent to the agent (pid 4242)"
    [bpf] = TAMPER.on_event(event("tamper", "bpf", bpf_cmd="BPF_LINK_DETACH"))
    assert bpf.evidence == {"what": "bpf", "bpf_cmd": "BPF_LINK_DETACH"}


def test_ptrace_of_a_process_of_the_same_sandbox_is_not_tamper():
    assert not list(TAMPER.on_event(event("tamper", "ptrace", target_pid=11, target_sandbox="sandbox-a")))
    assert list(TAMPER.on_event(event("tamper", "ptrace", target_pid=1, target_sandbox="host")))


def test_a_detached_probe_is_tamper_even_though_no_sandbox_is_named():
    [finding] = TAMPER.on_event(event("tamper", "probe_detached", sandbox="host", probe="flow"))
    assert finding.evidence == {"what": "probe_detached", "probe": "flow"}


def test_both_rules_are_critical_alerts_in_the_engine():
    engine = DetectionEngine(load_rules())
    [alert] = engine.process({**event("tamper", "bpf", bpf_cmd="BPF_MAP_CREATE"), "time": "2026-01-01T00:00:00Z"})
    assert (alert["rule"], alert["severity"]) == ("agent.tamper", "critical")


def test_kernel_records_become_events_with_names_for_numbers(tmp_path):
    host = fake_host(tmp_path)
    guard = GuardEvents(EventEnvelope("n", host.procs, SandboxCache(host.index, load_config()["sandbox"]), FixedClock()),
                        proc_root=str(host.proc))
    root_id = host.cgroups.stat().st_ino
    hdr = Header(KTIME, host.sandbox_id, 100, 100, 0, b"sh", host.sandbox_id)
    move = guard.guard_event(GuardRecord(hdr, True, "cgroup_move", 100, 0, 0, root_id, host.sandbox_id, b"/", b""))
    assert (move["kind"], move["to_cgroup"], move["to_sandbox"], move["target_sandbox"]) == \
        ("escape", "/", "host", "sandbox-a")
    bpf = guard.guard_event(GuardRecord(hdr, False, "bpf", 0, 0, 5, 0, 0, b"", b""))
    assert (bpf["kind"], bpf["bpf_cmd"]) == ("tamper", "BPF_PROG_LOAD")
    kill = guard.guard_event(GuardRecord(hdr, False, "signal", -1, 0, 9, 0, 0, b"", b""))
    assert (kill["signal"], kill["target"]) == ("SIGKILL", "every process")


def test_namespace_flags_are_named():
    assert namespace_names(0x40000000 | 0x10000000) == ["user", "net"]
