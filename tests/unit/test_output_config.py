"""The `outputs:` config contract: none on by default, the issue's shape accepted as is, and
every bad setting an error naming file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from ebpfguard.config import ConfigError, load_config
from ebpfguard.outputs.forward import Forwarders
from ebpfguard.outputs.settings import plan_outputs


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_no_output_is_on_by_default():
    assert plan_outputs(load_config()["outputs"]) == []
    assert not Forwarders.from_config(load_config()["outputs"], 5)


def test_the_contract_shape_turns_each_output_on(tmp_path):
    headers = tmp_path / "webhook-headers"
    headers.write_text("Authorization: Bearer abc\n")
    config = load_config(write(tmp_path, f"""
        outputs:
          alertmanager: {{url: "http://127.0.0.1:9093"}}
          falco: {{url: "http://127.0.0.1:2801/"}}
          syslog: {{address: "udp://127.0.0.1:514"}}
          webhook: {{url: "https://hooks.example/x", headers_file: {headers}}}
        """))
    assert [plan.name for plan in plan_outputs(config["outputs"])] == ["alertmanager", "falco", "syslog", "webhook"]
    assert config["outputs"]["alertmanager"]["resend_interval_s"] == 60.0  # defaults merged


@pytest.mark.parametrize("body, line, message", [
    ("outputs:\n  webhook:\n    url: ftp://x\n", 3, "'outputs.webhook.url': 'ftp://x' is not an http:// or https:// URL"),
    ("outputs:\n  syslog: {address: 'udp://127.0.0.1'}\n", 2, "'outputs.syslog.address'"),
    ("outputs:\n  syslog:\n    address: 'tcp://h:1'\n    facility: kernel\n", 4, "'outputs.syslog.facility': must be one of"),
    ("outputs:\n  alertmanager:\n    url: http://a:1\n    labels: {'bad-name': x}\n", 4, "'bad-name' is not a label name"),
    ("outputs:\n  alertmanager:\n    url: http://a:1\n    resend_interval_s: 0\n", 4, "must be a positive number"),
    ("outputs:\n  falco:\n    url: http://a:1\n    file: /tmp/x\n", 2, "set `url` (Falcosidekick) or `file`"),
    ("outputs:\n  webhook:\n    url: http://a:1\n    min_severity: urgent\n", 4, "must be one of info, low"),
    ("outputs:\n  webhook:\n    url: http://a:1\n    headers_file: /nonexistent/h\n", 4, "/nonexistent/h: cannot read"),
    ("outputs:\n  webhook:\n    url: http://a:1\n    ca_file: /nonexistent/ca.pem\n", 4, "cannot read /nonexistent/ca.pem"),
    ("outputs:\n  webhook:\n    url: http://a:1\n    spool_dir: relative/dir\n", 4, "must be an absolute path"),
    ("outputs:\n  webhook:\n    url: http://a:1\n    token: x\n", 4, "unknown key 'outputs.webhook.token'"),
    ("outputs:\n  kafka: {url: x}\n", 2, "unknown key 'outputs.kafka'"),
    ("outputs:\n  webhook:\n    url: http://a:1\n    queue_size: many\n", 4, "'outputs.webhook.queue_size' must be an integer"),
])
def test_a_bad_output_setting_names_file_line_and_key(tmp_path, body, line, message):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as problem:
        load_config(path)
    assert str(problem.value).startswith(f"{path}:{line}: ")
    assert message in str(problem.value)


def test_an_output_that_is_off_is_not_checked(tmp_path):
    config = load_config(write(tmp_path, "outputs:\n  webhook:\n    headers_file: /nonexistent/h\n"))
    assert plan_outputs(config["outputs"]) == []
