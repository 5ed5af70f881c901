"""Sandbox naming from realistic cgroup v2 paths, with the cgroup root passed in."""

import os

import pytest

from ebpfguard.config import load_config
from ebpfguard.sandbox import CgroupIndex, classify, find_cgroup2_mount, resolve_sandbox

SETTINGS = {**load_config()["sandbox"], "systemd_units": ["ci-runner.service"]}
CID = "4f1e9c2a7b3d" + "0" * 52


@pytest.mark.parametrize(
    "path, name, runtime",
    [
        ("/sandbox-42", "sandbox-42", "pattern"),
        ("/user.slice/sandbox-42/agent-x", "sandbox-42", "pattern"),
        ("/agent-7/sandbox-inner/deeper", "agent-7", "pattern"),
        (f"/system.slice/docker-{CID}.scope", f"docker-{CID[:12]}", "docker"),
        (f"/docker/{CID}", f"docker-{CID[:12]}", "docker"),
        (f"/system.slice/containerd.service/cri-containerd-{CID}.scope", f"containerd-{CID[:12]}", "containerd"),
        ("/system.slice/ci-runner.service", "ci-runner.service", "systemd"),
        ("/system.slice/ssh.service", "host", "host"),
        ("/user.slice/user-1000.slice/session-3.scope", "host", "host"),
        ("/", "host", "host"),
        ("/sandboxes/x", "host", "host"),
    ],
)
def test_paths_are_named_by_the_first_matching_matcher(path, name, runtime):
    sandbox = classify(path, SETTINGS)
    assert (sandbox.name, sandbox.runtime) == (name, runtime)


def test_docker_container_id_is_kept_in_full():
    assert classify(f"/docker/{CID}", SETTINGS).container_id == CID


def test_a_sandbox_inside_a_docker_container_is_named_by_matcher_order():
    path = f"/system.slice/docker-{CID}.scope/sandbox-1"
    assert classify(path, SETTINGS).name == "sandbox-1"
    docker_first = {**SETTINGS, "matchers": ["docker", "pattern"]}
    assert classify(path, docker_first).runtime == "docker"


def test_a_bare_hex_directory_outside_docker_is_not_a_container():
    assert classify(f"/other/{CID}", SETTINGS).runtime == "host"


def test_cgroup2_mount_is_found_in_mountinfo_on_hybrid_and_unified_hosts():
    hybrid = (
        "25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n"
        "27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    )
    unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate\n"
    assert find_cgroup2_mount(hybrid) == "/sys/fs/cgroup/unified"
    assert find_cgroup2_mount(unified) == "/sys/fs/cgroup"
    assert find_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n") is None


def test_index_resolves_ids_by_walking_a_tree_passed_in(tmp_path):
    (tmp_path / "sandbox-a" / "agent-x").mkdir(parents=True)
    index = CgroupIndex(str(tmp_path))
    index._by_handle.works = False  # a plain directory tree has no kernfs file handles
    inner = os.stat(tmp_path / "sandbox-a" / "agent-x").st_ino
    sandbox, known = resolve_sandbox(index, inner, SETTINGS)
    assert known and sandbox == {"name": "sandbox-a", "cgroup": "/sandbox-a/agent-x",
                                 "cgroup_id": inner, "runtime": "pattern"}


def test_a_removed_cgroup_still_resolves_while_cached_and_is_unknown_otherwise(tmp_path):
    gone = tmp_path / "sandbox-b"
    gone.mkdir()
    index = CgroupIndex(str(tmp_path))
    index._by_handle.works = False
    ino = os.stat(gone).st_ino
    assert index.path_of(ino) == "/sandbox-b"
    gone.rmdir()
    assert index.path_of(ino) == "/sandbox-b"
    sandbox, known = resolve_sandbox(index, 999_999_999, SETTINGS)
    assert not known and sandbox["name"] == "unknown"
