"""miner.tuning: MSR and huge page tuning from a sandbox, by exec grammar and by open."""

from __future__ import annotations

import pytest
from shipped_rules import context_for

from ebpfguard.detect.miner_tuning import MinerTuning

RULE = MinerTuning(context_for("miner.tuning"))


def findings(event: dict) -> list:
    return list(RULE.on_event({"sandbox": {"name": "sandbox-t"}, **event}))


@pytest.mark.parametrize("argv, action, severity", [
    (["modprobe", "msr", "allow_writes=on"], "load_msr_module", "high"),
    (["insmod", "/lib/modules/6.1.0/kernel/arch/x86/kernel/msr.ko.xz"], "load_msr_module", "high"),
    (["wrmsr", "-a", "0x1a4", "0xf"], "write_msr", "high"),
    (["sysctl", "-w", "vm.nr_hugepages=1280"], "set_huge_pages", "medium"),
    (["sh", "-c", "echo on > /sys/module/msr/parameters/allow_writes"], "write_setting", "high"),
    (["nohup", "sh", "-c", "echo 1280 >> /proc/sys/vm/nr_hugepages"], "write_setting", "medium"),
])
def test_miner_tuning_commands_are_caught_by_their_grammar(argv, action, severity):
    [finding] = findings({"kind": "exec", "argv": argv})
    assert finding.evidence["action"] == action and finding.severity == severity


@pytest.mark.parametrize("argv", [
    ["sysctl", "vm.nr_hugepages"], ["modprobe", "-r", "msr"], ["modprobe", "nvidia-uvm"],
    ["cat", "/proc/sys/vm/nr_hugepages"], ["sh", "-c", "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"],
    ["sh", "-c", "echo nr_hugepages=1280 >> notes.txt"],
])
def test_reading_settings_and_other_modules_are_not_tuning(argv):
    assert findings({"kind": "exec", "argv": argv}) == []


def test_msr_device_opens_alert_in_any_mode_and_settings_only_for_writing():
    assert findings({"kind": "open", "filename": "/dev/cpu/0/msr", "flags": 0, "retval": 3})[0].severity == "high"
    assert findings({"kind": "open", "filename": "/proc/sys/vm/nr_hugepages", "flags": 1, "retval": 3})
    assert findings({"kind": "open", "filename": "/proc/sys/vm/nr_hugepages", "flags": 0, "retval": 3}) == []
    assert findings({"kind": "open", "filename": "/dev/cpu/0/cpuid", "flags": 0, "retval": 3}) == []


def test_the_host_tuning_its_own_cpus_is_not_an_alert():
    assert list(RULE.on_event({"kind": "exec", "argv": ["modprobe", "msr"], "sandbox": {"name": "host"}})) == []
