"""Sandbox naming from realistic cgroup v2 paths, with the cgroup root passed in."""

import os

import pytest

from ebpfguard.config import load_config
from ebpfguard.enrich.sandbox import CgroupIndex, classify, find_cgroup2_mount, resolve_sandbox

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


# --- Kubernetes: kubelet cgroup layouts (systemd and cgroupfs drivers, per QoS class) ---------

POD_UID = "8a9b6f3e-2c1d-4e5f-9a0b-1c2d3e4f5a6b"
POD_UID_ = POD_UID.replace("-", "_")


@pytest.mark.parametrize(
    "path, container_id",
    [
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID_}.slice/cri-containerd-{CID}.scope", CID),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID_}.slice/crio-{CID}.scope", CID),
        (f"/kubepods.slice/kubepods-pod{POD_UID_}.slice/docker-{CID}.scope", CID),  # guaranteed QoS
        (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
         f"kubelet-kubepods-besteffort-pod{POD_UID_}.slice/cri-containerd-{CID}.scope", CID),  # kind
        (f"/kubepods/burstable/pod{POD_UID}/{CID}", CID),
        (f"/kubepods/pod{POD_UID}/{CID}", CID),  # cgroupfs, guaranteed QoS
        (f"/kubepods/besteffort/pod{POD_UID}", None),  # the pod's own cgroup
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID_}.slice/crio-conmon-{CID}.scope", None),
    ],
)
def test_kubepods_paths_name_the_pod_uid_and_container(path, container_id):
    sandbox = classify(path, SETTINGS)
    assert (sandbox.runtime, sandbox.pod_uid, sandbox.container_id) == ("kubernetes", POD_UID, container_id)
    assert sandbox.name == f"pod-{POD_UID}"


def test_a_process_nested_below_a_container_belongs_to_its_pod():
    path = f"/kubepods/burstable/pod{POD_UID}/{CID}/worker"
    assert classify(path, SETTINGS).container_id == CID


def test_a_pod_directory_outside_kubepods_is_not_a_pod():
    assert classify(f"/system.slice/pod{POD_UID}", SETTINGS).runtime == "host"


def test_kubernetes_is_tried_before_the_containerd_matcher_by_default():
    path = f"/kubepods.slice/kubepods-pod{POD_UID_}.slice/cri-containerd-{CID}.scope"
    assert classify(path, SETTINGS).runtime == "kubernetes"
    assert classify(path, {**SETTINGS, "matchers": ["containerd"]}).runtime == "containerd"


def test_a_known_pod_is_named_namespace_slash_pod_with_its_fields(tmp_path):
    from ebpfguard.enrich.pods import PodDirectory

    container = tmp_path / "kubepods" / "burstable" / f"pod{POD_UID}" / CID
    container.mkdir(parents=True)
    index = CgroupIndex(str(tmp_path))
    index._by_handle.works = False
    pods = PodDirectory("/var/log/pods", list_entries=lambda _: [f"ml-jobs_trainer-7f9c_{POD_UID}"])
    ino = os.stat(container).st_ino
    sandbox, known = resolve_sandbox(index, ino, SETTINGS, pods)
    assert known and sandbox == {
        "name": "ml-jobs/trainer-7f9c", "cgroup": f"/kubepods/burstable/pod{POD_UID}/{CID}", "cgroup_id": ino,
        "runtime": "kubernetes", "pod": "trainer-7f9c", "namespace": "ml-jobs", "pod_uid": POD_UID,
        "container_id": CID,
    }
