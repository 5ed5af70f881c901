"""What each output writes: Falco's format as Falcosidekick parses and checks it (one alert per
shipped rule), Alertmanager's labels and alert lifecycle, RFC 5424 messages, our webhook JSON."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from ebpfguard.detect.engine import DetectionEngine, _alert as _engine_alert, load_rules
from ebpfguard.detect.registry import DETECTORS, Finding
from ebpfguard.detect.replay import replay
from ebpfguard.outputs.alertmanager import AlertmanagerFormat, api_url, labels_of
from ebpfguard.outputs.falco import PRIORITIES, falco_alert
from ebpfguard.outputs.syslog import format_message, sd_escape, timestamp
from ebpfguard.outputs.webhook import WebhookFormat

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def _alert(rule, finding: Finding, event: dict) -> dict:
    """An alert exactly as the engine builds it from a finding."""
    return _engine_alert(rule, finding, event, finding.severity or rule.severity)
SHIPPED = [rule for rule in load_rules().rules]

# -- Falcosidekick's view of a payload -----------------------------------------------------------
# From falcosecurity/falcosidekick (types/types.go FalcoPayload and Check, types/priority.go,
# handlers.go newFalcoPayload): JSON decoded into typed fields; `priority` a string naming one
# of eight priorities (anything else is "", and Check refuses it); `rule` non-empty;
# `time` a Go time.Time, i.e. an RFC 3339 string, not the zero time; `output_fields` a
# non-empty object of any JSON values, except that k8s.ns.name and k8s.pod.name are
# type-asserted to strings; `output`, `source`, `hostname` strings; `tags` strings.
FALCO_PRIORITIES = {"emergency", "alert", "critical", "error", "warning", "notice", "informational", "info", "debug"}
GO_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)\Z")


def falcosidekick_problems(payload: dict) -> list[str]:
    """Why Falcosidekick would refuse (or mis-read) a payload; empty when it takes it."""
    problems = []
    expected = {"output": str, "priority": str, "rule": str, "time": str, "output_fields": dict,
                "source": str, "tags": list, "hostname": str}
    for key, kind in expected.items():
        if not isinstance(payload.get(key), kind):
            problems.append(f"{key} is not a {kind.__name__}")
    if problems:
        return problems
    if payload["priority"].lower() not in FALCO_PRIORITIES:
        problems.append(f"unknown priority {payload['priority']!r}")
    if not payload["rule"]:
        problems.append("empty rule")
    if not GO_RFC3339.match(payload["time"]):
        problems.append(f"time {payload['time']!r} is not RFC 3339")
    elif datetime.fromisoformat(payload["time"][:19]).year <= 1:
        problems.append("zero time")
    if not payload["output_fields"]:
        problems.append("empty output_fields")
    for key, value in payload["output_fields"].items():
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            problems.append(f"output_fields[{key}] is a {type(value).__name__}, not a scalar")
    for key in ("k8s.ns.name", "k8s.pod.name"):
        if payload["output_fields"].get(key) is not None and not isinstance(payload["output_fields"][key], str):
            problems.append(f"{key} is not a string")
    if not all(isinstance(tag, str) for tag in payload["tags"]):
        problems.append("a tag is not a string")
    if not payload["output"]:
        problems.append("empty output")
    return problems


FULL_CONTEXT = {
    "time": "2026-11-29T21:00:00.123456789Z", "node": "gpu-node-7",
    "sandbox": {"name": "sandbox-rl-42", "cgroup": "/kubepods/pod1/abc", "cgroup_id": 99, "runtime": "kubernetes",
                "pod": "trainer-0", "namespace": "rl", "pod_uid": "uid-1", "container_id": "abc123"},
    "process": {"pid": 4242, "ppid": 4200, "uid": 1000, "comm": "xmrig", "exe": "/tmp/.x/xmrig",
                "argv": ["/tmp/.x/xmrig", "-o", "stratum+tcp://pool.example:3333", "--donate-level", "1"],
                "argv_truncated": False, "ancestry": [{"pid": 4200, "comm": "bash", "exe": "/bin/bash"}]},
}
KIND_FIELDS = {
    "exec": {"filename": "/tmp/.x/xmrig", "retval": 0},
    "connect": {"family": 2, "daddr": "10.0.0.5", "dport": 3333, "retval": 0},
    "flow": {"direction": "egress", "daddr": "203.0.113.10", "dport": 3333, "payload_b64": "e30K", "sni": "pool.example"},
    "dns": {"query": "pool.example", "qtype": "A"},
    "open": {"filename": "/dev/nvidia0", "flags": 2, "retval": 3},
    "exit": {"exit_code": 0},
    "socket": {"family": 2, "type": 1, "protocol": 6, "retval": 3},
    "gpu": {"gpu": 0, "memory_bytes": 1 << 30, "utilization_ratio": 0.5},
}
# Evidence values of every JSON type a detector may put there.
EVIDENCE_SAMPLES = ("a value", 3333, ["one", "two"], {"nested": True}, None, 0.5)


def shipped_alerts():
    """For each shipped rule and each event kind its detector reads: an alert as the engine
    builds it, with every evidence key the rule documents; once with full context and once
    with a replayed minimal event's (unknown sandbox, no process details)."""
    for rule in SHIPPED:
        evidence = {key: EVIDENCE_SAMPLES[i % len(EVIDENCE_SAMPLES)] for i, key in enumerate(rule.evidence)}
        for kind in DETECTORS[rule.id].kinds:
            full = {"kind": kind, **FULL_CONTEXT, **KIND_FIELDS.get(kind, {})}
            minimal = {"kind": kind, "sandbox": {"name": "unknown"}, "process": {"argv": []}, **KIND_FIELDS.get(kind, {})}
            for name, event in (("full", full), ("minimal", minimal)):
                yield pytest.param(_alert(rule, Finding(summary=f"{rule.id} fired", evidence=evidence), event),
                                   id=f"{rule.id}-{kind}-{name}")


def test_every_shipped_rule_is_covered():
    ids = {param.id.rsplit("-", 2)[0] for param in shipped_alerts()}
    assert ids == {rule.id for rule in SHIPPED} and len(ids) >= 7


@pytest.mark.parametrize("alert", shipped_alerts())
def test_falco_payload_of_every_shipped_rule_passes_falcosidekick_checks(alert):
    payload = falco_alert(alert, "ebpfguard")
    assert falcosidekick_problems(payload) == []
    assert payload["rule"] == alert["rule"] and payload["priority"] == PRIORITIES[alert["severity"]]
    assert payload["output_fields"]["ebpfguard.rule"] == alert["rule"]
    assert json.loads(json.dumps(payload)) == payload  # plain JSON all the way down


def test_corpus_alerts_all_pass_falcosidekick_checks():
    """Real alerts: every corpus file through the real engine, as `ebpfguard replay` runs it."""
    out = io.StringIO()
    rules = load_rules([CORPUS / "tunnel_rules_overlay.yaml"])
    for path in sorted(CORPUS.glob("*.jsonl")):
        with open(path, "rb") as stream:
            replay(stream, DetectionEngine(rules), out, io.StringIO())
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {a["rule"] for a in alerts} >= {"miner.exec", "miner.stratum", "miner.pool", "tunnel.ssh_remote_forward"}
    for alert in alerts:
        assert falcosidekick_problems(falco_alert(alert, "ebpfguard")) == [], alert


def test_falco_fields_use_falco_names_for_process_container_pod_and_connection():
    alert = _alert(SHIPPED[0], Finding("s", {}), {"kind": "flow", **FULL_CONTEXT, **KIND_FIELDS["flow"]})
    fields = falco_alert(alert, "ebpfguard")["output_fields"]
    assert fields["proc.name"] == "xmrig" and fields["proc.pid"] == 4242 and fields["proc.exepath"] == "/tmp/.x/xmrig"
    assert fields["proc.cmdline"] == "xmrig -o stratum+tcp://pool.example:3333 --donate-level 1"
    assert fields["proc.pname"] == "bash" and fields["user.uid"] == 1000
    assert (fields["container.id"], fields["k8s.pod.name"], fields["k8s.ns.name"]) == ("abc123", "trainer-0", "rl")
    assert (fields["fd.sip"], fields["fd.sport"], fields["fd.sip.name"]) == ("203.0.113.10", 3333, "pool.example")
    assert fields["ebpfguard.sandbox"] == "sandbox-rl-42"


def test_falco_output_escapes_what_a_sandbox_wrote():
    event = {"kind": "exec", **FULL_CONTEXT}
    event["process"] = {**FULL_CONTEXT["process"], "argv": ["x", "\x1b]0;pwned\x07", "a\nb"]}
    payload = falco_alert(_alert(SHIPPED[0], Finding("s", {}), event), "ebpfguard")
    text = json.dumps(payload)
    assert "\\u001b" not in text and "\\n" not in payload["output"] and "\x1b" not in payload["output"]


# -- Alertmanager ----------------------------------------------------------------------------------

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


@pytest.mark.parametrize("alert", shipped_alerts())
def test_alertmanager_labels_are_label_safe_and_group_by_rule_severity_sandbox_and_node(alert):
    labels = labels_of(alert, {"cluster": "west"})
    assert all(LABEL_NAME.match(name) for name in labels)
    assert labels["alertname"] == alert["rule"] and labels["severity"] == alert["severity"]
    assert labels["sandbox"] and labels["node"] and labels["cluster"] == "west"
    assert ("pod" in labels) == bool(alert["sandbox"].get("pod"))
    assert "pid" not in labels  # one Alertmanager alert per sandbox and rule, however many processes


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_800_000_000 * 10**9

    def wall_ns(self) -> int:
        return self.wall


def miner_alert(pid: int, sandbox: str = "sandbox-a") -> dict:
    event = {"kind": "exec", **FULL_CONTEXT, "sandbox": {"name": sandbox, "runtime": "pattern"},
             "process": {**FULL_CONTEXT["process"], "pid": pid}}
    return _alert(next(r for r in SHIPPED if r.id == "miner.exec"), Finding("miner", {"binary": "xmrig"}), event)


def posted(payloads: list[bytes]) -> list[dict]:
    return [alert for body in payloads for alert in json.loads(body)]


def test_alertmanager_fires_once_per_sandbox_and_rule_and_resolves_when_its_processes_exit():
    clock = Clock()
    am = AlertmanagerFormat("info", {}, resend_interval_s=60, resolve_after_s=3600, wall_ns=clock.wall_ns)
    first, second = miner_alert(10), miner_alert(11)
    assert am.accepts(first) and am.accepts(second)
    firing = posted(am.payloads(first, clock.mono))
    assert len(firing) == 1 and firing[0]["startsAt"].startswith("2026-11-29T21:00:00.123456789")
    assert am.payloads(second, clock.mono) == []  # the same Alertmanager alert: nothing new to post
    assert not am.accepts({"kind": "exit", "process": {"pid": 999}})  # not a process we alerted on
    assert am.accepts({"kind": "exit", "process": {"pid": 10}})
    assert am.payloads({"kind": "exit", "process": {"pid": 10}}, clock.mono) == []  # pid 11 still runs
    resolved = posted(am.payloads({"kind": "exit", "process": {"pid": 11}}, clock.mono))
    assert len(resolved) == 1 and resolved[0]["labels"] == firing[0]["labels"]
    assert resolved[0]["endsAt"] == "2027-01-15T08:00:00.000000000Z"
    assert am.next_due() is None


def test_alertmanager_re_sends_while_active_with_ends_at_ahead_and_resolves_after_the_configured_time():
    clock = Clock()
    am = AlertmanagerFormat("info", {}, resend_interval_s=60, resolve_after_s=300, wall_ns=clock.wall_ns)
    am.payloads(miner_alert(10), clock.mono)
    assert am.resend(clock.mono + 59) == []
    clock.wall += 60 * 10**9
    again = posted(am.resend(clock.mono + 60))
    assert len(again) == 1 and again[0]["endsAt"] == "2027-01-15T08:04:00.000000000Z"  # 3 intervals ahead
    assert am.due(clock.mono + 299) == []
    clock.wall += 240 * 10**9
    resolved = posted(am.due(clock.mono + 300))
    assert len(resolved) == 1 and resolved[0]["endsAt"] == "2027-01-15T08:05:00.000000000Z"
    assert am.resend(clock.mono + 360, force=True) == []


def test_alertmanager_url_is_the_v2_alerts_endpoint():
    assert api_url("http://am:9093") == api_url("http://am:9093/") == "http://am:9093/api/v2/alerts"
    assert api_url("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"


# -- syslog ----------------------------------------------------------------------------------------

RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) "
    r"(?P<msgid>[!-~]{1,32}) (?P<sd>-|\[.*?(?<!\\)\])(?: (?P<msg>.*))?\Z", re.DOTALL)
SD_PARAM = re.compile(r'([^= \]"]{1,32})="((?:[^"\\\]]|\\["\\\]])*)"')


def parse_sd(sd: str) -> dict[str, str]:
    assert sd.startswith("[ebpfguard@32473 ") and sd.endswith("]")
    inner = sd[len("[ebpfguard@32473 "):-1]
    params = SD_PARAM.findall(inner)
    assert " ".join(f'{k}="{v}"' for k, v in params) == inner  # nothing outside well-formed params
    return {k: re.sub(r"\\([\"\\\]])", r"\1", v) for k, v in params}


@pytest.mark.parametrize("alert", shipped_alerts())
def test_syslog_message_of_every_shipped_rule_is_rfc5424_with_structured_data(alert):
    message = format_message(alert, 16, "ebpfguard", 1234, 2048)
    assert len(message) <= 2048
    found = RFC5424.match(message.decode("utf-8"))
    assert found, message
    severity = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}[alert["severity"]]
    assert int(found["pri"]) == 16 * 8 + severity
    assert found["msgid"] == alert["rule"]
    assert parse_sd(found["sd"])["rule"] == alert["rule"]


def test_syslog_escapes_quotes_backslashes_and_brackets_and_keeps_a_newline_out():
    event = {"kind": "exec", **FULL_CONTEXT}
    event["process"] = {**FULL_CONTEXT["process"], "argv": ['a"b', "c\\d", "e]f", "g\nh"]}
    alert = _alert(SHIPPED[0], Finding('sum"mary]', {"k": 'v"]'}), event)
    message = format_message(alert, 16, "ebpfguard", 1, 4096).decode()
    assert "\n" not in message
    sd = parse_sd(RFC5424.match(message)["sd"])
    assert sd["cmdline"] == "'a\"b' 'c\\d' 'e]f' 'g\\x0ah'"
    assert sd["evidence"] == 'k=v"]'
    assert sd_escape('"]\\') == '\\"\\]\\\\'


def test_a_huge_command_line_is_cut_to_the_message_limit_and_stays_well_formed():
    event = {"kind": "exec", **FULL_CONTEXT}
    event["process"] = {**FULL_CONTEXT["process"], "argv": ["x" * 5000, "é" * 3000, "]" * 2000]}
    for limit in (480, 1024, 2048, 8192):
        message = format_message(_alert(SHIPPED[0], Finding("s" * 4000, {"k": "v" * 4000}), event), 16, "e", 1, limit)
        assert len(message) <= limit
        found = RFC5424.match(message.decode("utf-8"))
        assert found and parse_sd(found["sd"])["rule"] == SHIPPED[0].id


def test_syslog_timestamp_keeps_at_most_six_fraction_digits():
    assert timestamp("2026-11-29T21:00:00.123456789Z") == "2026-11-29T21:00:00.123456Z"
    assert timestamp("2026-11-29T21:00:00Z") == "2026-11-29T21:00:00Z"
    assert timestamp(None) == "-"


# -- webhook ---------------------------------------------------------------------------------------


def test_webhook_posts_our_alert_json_unchanged():
    alert = miner_alert(10)
    (body,) = WebhookFormat("info").payloads(alert, 0)
    assert json.loads(body) == json.loads(json.dumps(alert)) and body.isascii()
