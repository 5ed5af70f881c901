"""summary events: the kernel's running per-cgroup counts become per-second counts per sandbox."""

from __future__ import annotations

from ebpfguard.config import load_config
from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.sandbox_cache import SandboxCache
from ebpfguard.enrich.summary import per_cgroup, summary_event

from enrich_env import FixedClock, fake_host


def test_counts_are_grouped_by_cgroup_without_zeros():
    assert per_cgroup({(7, "connect"): 10, (7, "socket"): 4, (9, "flow"): 1, (9, "socket"): 0}) == {
        7: {"connect": 10, "socket": 4}, 9: {"flow": 1}}


def test_summary_event_names_the_sandbox_and_is_about_no_process(tmp_path):
    host = fake_host(tmp_path)
    envelope = EventEnvelope("node-1", host.procs, SandboxCache(host.index, load_config()["sandbox"]), FixedClock())
    event = summary_event(envelope, host.sandbox_id, {"socket": 5, "connect": 7}, {"net": 2}, 1.0004)
    assert event["kind"] == "summary" and event["sandbox"]["name"] == "sandbox-a"
    assert event["held_back"] == {"connect": 7, "socket": 5} and event["lost"] == {"net": 2}
    assert event["window_s"] == 1.0
    assert event["process"]["pid"] is None and event["partial"] == ["process"]
