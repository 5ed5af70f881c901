"""What the probes are compiled with: ring sizes, the per-sandbox rate limit, kernel features."""

from __future__ import annotations

import copy

import pytest

from ebpfguard.config import load_config
from ebpfguard.kernel.load import ProbeError, compile_flags, program_text


def flags(tmp_path, btf=True, **probes):
    config = copy.deepcopy(load_config())
    for key, value in probes.items():
        config["probes"][key] = value
    vmlinux = tmp_path / ("vmlinux" if btf else "absent")
    if btf:
        vmlinux.write_bytes(b"")
    return compile_flags(config, str(tmp_path), btf=str(vmlinux))


def test_both_rings_and_the_rate_limit_come_from_the_config(tmp_path):
    got = flags(tmp_path, ring_buffer_pages=64, exec_ring_buffer_pages=8,
                rate_limit={"events_per_s": 500, "burst": 50, "stack_argv_kib_per_s": 1024})
    assert {"-DRINGBUF_PAGES=64", "-DEXEC_RINGBUF_PAGES=8", "-DBULK_RATE=500", "-DBULK_BURST=50",
            "-DARGV_STACK_RATE=128"} <= set(got)


def test_the_stack_argv_read_needs_the_kernels_btf(tmp_path):
    assert "-DHAVE_STACK_ARGV" in flags(tmp_path)
    assert "-DHAVE_STACK_ARGV" not in flags(tmp_path, btf=False)


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
    assert text.index("bulk_admit(u64 cgroup_id") < text.index("bulk_admit(bpf_get_current_cgroup_id()")
    assert text.index("BPF_TABLE(\"lru_hash\", u32, u32, argv_incomplete") < text.index("argv_incomplete.delete")
