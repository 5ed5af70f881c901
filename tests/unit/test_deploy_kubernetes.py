"""deploy/kubernetes/: valid for the Kubernetes API (kubernetes-validate's bundled OpenAPI
schemas, strict: unknown fields are errors), the PodMonitor valid for the Prometheus Operator's
CRD schema (vendored in tests/schemas/), and the pieces agree with each other and the agent."""


import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_files import REPO

from ebpfguard.kernel.capabilities import REQUIRED

MANIFESTS = REPO / "deploy" / "kubernetes"
# The newest Kubernetes release whose schemas kubernetes-validate bundles (pinned in pyproject).
KUBERNETES_VERSION = kubernetes_validate.latest_version()
PODMONITOR_CRD = REPO / "tests" / "schemas" / "monitoring.coreos.com_podmonitors.yaml"


def documents() -> list[tuple[str, dict]]:
    return [(f"{path.name}:{doc['kind']}", doc) for path in sorted(MANIFESTS.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> dict:
    (found,) = [doc for _, doc in documents() if doc["kind"] == kind]
    return found


def agent_container() -> dict:
    (container,) = of_kind("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("name, doc", [d for d in documents() if d[1]["kind"] != "PodMonitor"], ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_is_valid_for_the_kubernetes_api(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def podmonitor_schema() -> dict:
    crd = yaml.safe_load(PODMONITOR_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def test_podmonitor_is_valid_for_the_prometheus_operator_crd():
    jsonschema.validate(of_kind("PodMonitor"), podmonitor_schema())


def undeclared_fields(value, schema: dict, where: str = "") -> list[str]:
    """Fields of `value` its structural schema does not declare (the API server drops them)."""
    if isinstance(value, dict) and "properties" in schema:
        found = []
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += undeclared_fields(item, schema["properties"][key], f"{where}.{key}")
        return found
    if isinstance(value, list) and "items" in schema:
        return [f for i, item in enumerate(value) for f in undeclared_fields(item, schema["items"], f"{where}[{i}]")]
    return []


def test_podmonitor_uses_no_field_the_crd_would_prune():
    assert undeclared_fields(of_kind("PodMonitor"), podmonitor_schema()) == []


def test_a_misspelt_podmonitor_field_is_caught():
    bad = yaml.safe_load(yaml.safe_dump(of_kind("PodMonitor")))
    bad["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert undeclared_fields(bad, podmonitor_schema()) == [".spec.podMetricsEndpoints[0].intervall"]


def test_the_agent_container_gets_exactly_the_required_capabilities():
    caps = agent_container()["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sorted(f"CAP_{cap}" for cap in caps["add"]) == sorted(REQUIRED)


def test_metrics_are_served_on_the_node_loopback_only_by_default():
    # Host networking: 0.0.0.0 would put the endpoint on every pod's reach.
    container = agent_container()
    args = container["args"]
    assert args[args.index("--metrics-addr") + 1] == "127.0.0.1:9477"
    assert container["readinessProbe"]["httpGet"]["host"] == "127.0.0.1"
    assert of_kind("DaemonSet")["spec"]["template"]["spec"]["hostNetwork"] is True


def test_metrics_port_is_named_and_scraped_by_name():
    container = agent_container()
    assert {"name": "metrics", "containerPort": 9477, "protocol": "TCP"} in container["ports"]
    assert [e["port"] for e in of_kind("PodMonitor")["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert of_kind("Service")["spec"]["ports"][0]["targetPort"] == "metrics"


def test_service_and_podmonitor_select_the_daemonset_pods():
    pod_labels = of_kind("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    for selector in (of_kind("Service")["spec"]["selector"], of_kind("PodMonitor")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()


def test_the_agent_runs_on_every_node_and_sees_the_hosts_processes():
    spec = of_kind("DaemonSet")["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["hostPID"] and spec["hostNetwork"]
    mounts = {m["mountPath"] for m in agent_container()["volumeMounts"]}
    assert {"/sys/fs/cgroup", "/sys/kernel/tracing", "/sys/kernel/debug", "/lib/modules", "/usr/src",
            "/var/log/pods"} <= mounts


def test_the_pod_log_directory_mounted_is_the_one_the_agent_reads():
    from ebpfguard.config import load_config

    mounts = {m["mountPath"] for m in agent_container()["volumeMounts"]}
    assert load_config()["sandbox"]["pod_log_dir"] in mounts
