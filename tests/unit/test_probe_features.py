"""Features of the running kernel the probes are compiled for, found by probing, not by version."""

from ebpfguard.config import load_config
from ebpfguard.kernel.load import btf_names, compile_flags

# A BTF string table's shape: names separated by NULs (a kernel's has ~100k of them).
BTF_5_15 = b"\0int\0bpf_func_id\0BPF_FUNC_get_current_task_btf\0BPF_FUNC_task_pt_regs\0pt_regs\0"
BTF_5_10 = b"\0int\0bpf_func_id\0BPF_FUNC_get_current_task_btf\0BPF_FUNC_task_pt_regs_not\0pt_regs\0"


def test_a_helper_is_there_when_the_kernels_btf_names_its_enumerator(tmp_path):
    btf = tmp_path / "vmlinux"
    btf.write_bytes(BTF_5_15)
    assert btf_names(str(btf), "BPF_FUNC_task_pt_regs", "BPF_FUNC_get_current_task_btf")
    btf.write_bytes(BTF_5_10)
    assert not btf_names(str(btf), "BPF_FUNC_task_pt_regs")  # a longer name is not it
    assert not btf_names(str(tmp_path / "absent"), "BPF_FUNC_task_pt_regs")


def test_the_stack_argv_read_is_compiled_in_only_where_its_helper_exists(tmp_path):
    config = load_config()
    new, old = tmp_path / "new", tmp_path / "old"
    new.write_bytes(BTF_5_15)
    old.write_bytes(BTF_5_10)
    assert "-DHAVE_STACK_ARGV" in compile_flags(config, str(tmp_path), btf=str(new))
    assert "-DHAVE_STACK_ARGV" not in compile_flags(config, str(tmp_path), btf=str(old))
    assert "-DHAVE_STACK_ARGV" not in compile_flags(config, str(tmp_path), btf=str(tmp_path / "none"))
