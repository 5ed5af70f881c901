"""What the probes are compiled with: ring sizes, the per-sandbox rate limit, kernel features."""

from __future__ import annotations

import copy
import gzip

import pytest

from ebpfguard.config import load_config
from ebpfguard.kernel.features import (
    ATTACH_CGROUP_INET4_CONNECT, FUNC_JIFFIES64, FUNC_TASK_STORAGE_GET, PROG_TYPE_CGROUP_SKB,
    PROG_TYPE_CGROUP_SOCK_ADDR,
)
from ebpfguard.kernel.load import (
    IDLE_COUNTER_S, CounterGrowth, ProbeError, btf_names, clock_flags, compile_flags, kernel_hz, local_storage_flags,
    program_text,
)


# A BTF string table's shape: names separated by NULs (a kernel's has ~100k of them). 5.15
# added bpf_task_pt_regs; a 5.10 kernel's BTF names only bpf_get_current_task_btf of the two.
BTF_5_15 = b"\0int\0bpf_func_id\0BPF_FUNC_get_current_task_btf\0BPF_FUNC_task_pt_regs\0pt_regs\0"
BTF_5_10 = b"\0int\0bpf_func_id\0BPF_FUNC_get_current_task_btf\0BPF_FUNC_task_pt_regs_not\0pt_regs\0"


def flags(tmp_path, btf=BTF_5_15, helper_allowed=lambda *_: True, **probes):
    config = copy.deepcopy(load_config())
    for key, value in probes.items():
        config["probes"][key] = value
    vmlinux = tmp_path / ("vmlinux" if btf is not None else "absent")
    if btf is not None:
        vmlinux.write_bytes(btf)
    return compile_flags(config, str(tmp_path), btf=str(vmlinux), helper_allowed=helper_allowed)


def test_both_rings_and_the_rate_limit_come_from_the_config(tmp_path):
    got = flags(tmp_path, ring_buffer_pages=64, exec_ring_buffer_pages=8,
                rate_limit={"events_per_s": 500, "burst": 50, "stack_argv_kib_per_s": 1024})
    assert {"-DRINGBUF_PAGES=64", "-DEXEC_RINGBUF_PAGES=8", "-DBULK_RATE=500", "-DBULK_BURST=50",
            "-DARGV_STACK_RATE=128"} <= set(got)


def test_the_stack_argv_read_needs_the_kernels_btf_and_its_helper(tmp_path):
    assert "-DHAVE_STACK_ARGV" in flags(tmp_path)
    assert "-DHAVE_STACK_ARGV" not in flags(tmp_path, btf=None)
    assert "-DHAVE_STACK_ARGV" not in flags(tmp_path, btf=BTF_5_10)  # the verifier would refuse it


def test_a_helper_is_there_when_the_kernels_btf_names_its_enumerator(tmp_path):
    btf = tmp_path / "vmlinux"
    btf.write_bytes(BTF_5_15)
    assert btf_names(str(btf), "BPF_FUNC_task_pt_regs", "BPF_FUNC_get_current_task_btf")
    btf.write_bytes(BTF_5_10)
    assert not btf_names(str(btf), "BPF_FUNC_task_pt_regs")  # a longer name is not it
    assert not btf_names(str(tmp_path / "absent"), "BPF_FUNC_task_pt_regs")


@pytest.mark.parametrize("probes, message", [
    ({"exec_ring_buffer_pages": 3}, "exec_ring_buffer_pages must be a power of two"),
    ({"rate_limit": {"events_per_s": -1, "burst": 10, "stack_argv_kib_per_s": 1}}, "probes.rate_limit"),
    ({"rate_limit": {"events_per_s": 100, "burst": 0, "stack_argv_kib_per_s": 1}}, "probes.rate_limit"),
    ({"rate_limit": {"events_per_s": 100, "burst": 10, "stack_argv_kib_per_s": -1}}, "stack_argv_kib_per_s"),
])
def test_bad_probe_settings_are_clear_errors(tmp_path, probes, message):
    with pytest.raises(ProbeError, match=message):
        flags(tmp_path, **probes)


def test_the_rate_limit_and_stack_reader_are_in_the_program_before_their_users():
    text = program_text()
    assert text.index("bulk_admit(u64 cgroup_id") < text.index("bulk_admit(budget_of(")
    assert text.index("BPF_TABLE(\"lru_hash\", u32, u32, argv_incomplete") < text.index("argv_incomplete.delete")


def test_thread_local_storage_is_used_only_where_both_hook_kinds_may_call_its_helpers():
    assert local_storage_flags(lambda *_: True) == ["-DHAVE_TASK_STORAGE"]
    # 5.10: the connect hooks may not call bpf_get_current_task_btf (nor task storage)
    assert local_storage_flags(lambda prog_type, *_: prog_type != PROG_TYPE_CGROUP_SOCK_ADDR) == []
    assert local_storage_flags(lambda _t, helper, _a: helper != FUNC_TASK_STORAGE_GET) == []


def test_the_buckets_run_on_jiffies_where_the_kernels_hz_is_known_and_every_bulk_hook_may_read_them():
    assert clock_flags(250, lambda *_: True) == ["-DJIFFY_NS=4000000"]
    assert clock_flags(1000, lambda *_: True) == ["-DJIFFY_NS=1000000"]
    assert clock_flags(None, lambda *_: True) == []  # no kernel config to read: the clock
    assert clock_flags(250, lambda _t, helper, _a: helper != FUNC_JIFFIES64) == []
    assert clock_flags(250, lambda prog_type, *_: prog_type != PROG_TYPE_CGROUP_SKB) == []


def test_the_kernels_hz_is_read_from_the_first_build_configuration_found(tmp_path):
    packed, plain = tmp_path / "config.gz", tmp_path / "config-6.1"
    with gzip.open(packed, "wt") as f:
        f.write("CONFIG_HZ_250=y\nCONFIG_HZ=250\n")
    plain.write_text("CONFIG_HZ_1000=y\nCONFIG_HZ=1000\n")
    absent = str(tmp_path / "absent.gz")
    assert kernel_hz((absent, str(packed), str(plain))) == 250
    assert kernel_hz((absent, str(plain))) == 1000
    assert kernel_hz((absent,)) is None


def test_the_kernels_helpers_are_asked_through_the_stand_in(tmp_path):
    asked = []
    assert "-DHAVE_TASK_STORAGE" in flags(tmp_path, helper_allowed=lambda *call: asked.append(call) or True)
    assert "-DHAVE_TASK_STORAGE" not in flags(tmp_path, helper_allowed=lambda *_: False)
    assert not any(f.startswith("-DJIFFY_NS") for f in flags(tmp_path, helper_allowed=lambda *_: False))
    assert (PROG_TYPE_CGROUP_SOCK_ADDR, FUNC_TASK_STORAGE_GET, ATTACH_CGROUP_INET4_CONNECT) in asked


def test_per_cgroup_counters_report_their_growth_without_being_cleared():
    growth = CounterGrowth({1: "connect", 2: "flow"})
    assert growth.update({(7, 1): 10}, now=0.0) == ({(7, "connect"): 10}, [])
    assert growth.update({(7, 1): 15, (8, 2): 3}, now=1.0) == ({(7, "connect"): 5, (8, "flow"): 3}, [])
    assert growth.update({(7, 1): 15, (8, 2): 3}, now=2.0) == ({}, [])  # nothing new


def test_a_counter_the_lru_evicted_and_the_probe_inserted_again_counts_from_zero():
    growth = CounterGrowth({1: "connect"})
    growth.update({(7, 1): 500}, now=0.0)
    assert growth.update({(7, 1): 4}, now=1.0) == ({(7, "connect"): 4}, [])
    assert growth.update({}, now=2.0) == ({}, [])  # evicted again: forgotten
    assert growth.update({(7, 1): 2}, now=3.0) == ({(7, "connect"): 2}, [])


def test_only_a_counter_idle_for_a_minute_is_deleted_and_then_counts_from_zero():
    growth = CounterGrowth({1: "connect"})
    growth.update({(7, 1): 5, (9, 1): 1}, now=0.0)
    growth.update({(7, 1): 6, (9, 1): 1}, now=IDLE_COUNTER_S - 1)
    assert growth.update({(7, 1): 6, (9, 1): 1}, now=IDLE_COUNTER_S) == ({}, [(9, 1)])
    assert not growth.update({(7, 1): 6}, now=IDLE_COUNTER_S + 1)[1]  # 7 grew a second ago
    assert growth.update({(7, 1): 6, (9, 1): 1}, now=IDLE_COUNTER_S + 2) == ({(9, "connect"): 1}, [])
