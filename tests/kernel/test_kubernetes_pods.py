"""Pods named from real kubepods cgroups: the kubelet's layouts for the systemd and cgroupfs
drivers, containerd and CRI-O, made under the cgroup2 mount, with a process running inside.

Each layout is nested under a test cgroup (as kind nests a node's kubepods), so a real
kubelet's tree on the host is never touched.
"""

import uuid

import pytest
from conftest import RunningAgent, has_arg, marker

CONTAINER_ID = uuid.uuid4().hex + uuid.uuid4().hex


def layouts(uid: str) -> dict[str, str]:
    """Container cgroup paths as the kubelet and runtimes make them, for one pod UID."""
    slice_uid = uid.replace("-", "_")
    return {
        "systemd-containerd-burstable": "kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{slice_uid}.slice/cri-containerd-{CONTAINER_ID}.scope",
        "systemd-crio-besteffort": "kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{slice_uid}.slice/crio-{CONTAINER_ID}.scope",
        "systemd-containerd-guaranteed": f"kubepods.slice/kubepods-pod{slice_uid}.slice/cri-containerd-{CONTAINER_ID}.scope",
        "cgroupfs-containerd-burstable": f"kubepods/burstable/pod{uid}/{CONTAINER_ID}",
        "cgroupfs-crio-guaranteed": f"kubepods/pod{uid}/{CONTAINER_ID}",
    }


@pytest.fixture(scope="module")
def pod_logs(tmp_path_factory):
    """The kubelet's pod log directory (`<namespace>_<pod>_<uid>/` per pod), empty at first."""
    return tmp_path_factory.mktemp("pods")


@pytest.fixture(scope="module")
def k8s_agent(tmp_path_factory, pod_logs):
    workdir = tmp_path_factory.mktemp("k8s-agent")
    config = workdir / "config.yaml"
    config.write_text(f"sandbox:\n  pod_log_dir: {pod_logs}\n")
    running = RunningAgent(workdir, ("--config", str(config)))
    yield running
    assert running.stop() == 0, running.stderr[-4000:]


@pytest.mark.parametrize("layout", sorted(layouts("0")))
def test_a_process_in_a_pod_container_names_its_pod_namespace_and_container(k8s_agent, pod_logs, make_cgroup, layout):
    uid = str(uuid.uuid4())
    (pod_logs / f"rl-sandboxes_agent-run-{uid[:5]}_{uid}" / "worker").mkdir(parents=True)
    container = make_cgroup("ebpfguard-node-").child(layouts(uid)[layout])
    token = marker()
    container.run(["/bin/true", token], check=True)
    sandbox = k8s_agent.wait_for(has_arg(token))["sandbox"]
    assert sandbox == {
        "name": f"rl-sandboxes/agent-run-{uid[:5]}", "cgroup": container.rel, "cgroup_id": sandbox["cgroup_id"],
        "runtime": "kubernetes", "pod": f"agent-run-{uid[:5]}", "namespace": "rl-sandboxes",
        "pod_uid": uid, "container_id": CONTAINER_ID,
    }


def test_a_pod_the_kubelet_has_not_told_of_keeps_its_uid_as_name(k8s_agent, make_cgroup):
    uid = str(uuid.uuid4())
    container = make_cgroup("ebpfguard-node-").child(layouts(uid)["cgroupfs-containerd-burstable"])
    token = marker()
    container.run(["/bin/true", token], check=True)
    sandbox = k8s_agent.wait_for(has_arg(token))["sandbox"]
    assert (sandbox["name"], sandbox["pod_uid"], sandbox["runtime"]) == (f"pod-{uid}", uid, "kubernetes")
    assert "pod" not in sandbox and "namespace" not in sandbox
