"""The `response:` section: the contract's shape, and errors naming file, line and key."""

import subprocess
import sys
import textwrap

import pytest

from ebpfguard.config import ConfigError, load_config
from ebpfguard.respond.config import parse_allow_entry, parse_response

KINDS = {"miner.stratum": ("flow",), "miner.pool": ("dns", "flow", "connect"), "miner.exec": ("exec",),
         "tunnel.ssh_remote_forward": ("exec", "connect", "exit")}


def load(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return parse_response(load_config(path)["response"], KINDS, path), path


def test_the_contract_example_loads(tmp_path):
    response, _ = load(tmp_path, """
        response:
          mode: enforce
          sandboxes: ["sandbox-*"]
          rules:
            miner.stratum: [block-flow]
            miner.pool: [deny-connect]
            tunnel.ssh_remote_forward: [block-flow, freeze]
    """)
    assert response.mode == "enforce" and response.active
    assert response.rules["tunnel.ssh_remote_forward"] == ("block-flow", "freeze")


def test_responses_are_off_by_default_and_an_unquoted_off_means_off(tmp_path):
    assert parse_response(load_config()["response"], KINDS, None).mode == "off"
    response, _ = load(tmp_path, "response:\n  mode: off\n")
    assert response.mode == "off" and not response.active


@pytest.mark.parametrize("rules, line, message", [
    ("    miner.stratum: [drop-it]\n", 4, "'response.rules.miner.stratum': unknown action 'drop-it'"),
    ("    miner.exec: [block-flow]\n", 4, "'response.rules.miner.exec': block-flow needs a flow"),
    ("    miner.exec: [deny-connect]\n", 4, "'response.rules.miner.exec': deny-connect needs a destination"),
    ("    miner.stratum: [freeze]\n    miner.exec: [quarantine]\n", 5,
     "'response.rules.miner.exec': quarantine needs an allowlist"),
    ("    no.such.rule: [freeze]\n", 4, "'response.rules.no.such.rule': no rule has this id"),
])
def test_bad_rules_name_file_line_and_key(tmp_path, rules, line, message):
    path = tmp_path / "c.yaml"
    path.write_text("response:\n  mode: enforce\n  rules:\n" + rules)
    with pytest.raises(ConfigError) as caught:
        parse_response(load_config(path)["response"], KINDS, path)
    assert str(caught.value).startswith(f"{path}:{line}: {message}")


def test_a_bad_mode_or_allowlist_entry_names_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("response:\n  mode: enforce\n  quarantine_allow: [not-an-address]\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: 'response.quarantine_allow'"):
        parse_response(load_config(path)["response"], KINDS, path)
    path.write_text("response:\n  mode: always\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: 'response.mode' must be one of off, dry-run, enforce"):
        parse_response(load_config(path)["response"], KINDS, path)


def test_rules_must_be_a_mapping_of_rule_to_actions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("response:\n  rules: [block-flow]\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: 'response.rules' must be a mapping"):
        load_config(path)


@pytest.mark.parametrize("text, network, port", [
    ("10.0.0.2:53", "10.0.0.2/32", 53), ("10.0.0.0/8", "10.0.0.0/8", 0), ("127.0.0.53", "127.0.0.53/32", 0),
    ("[fd00::53]:53", "fd00::53/128", 53), ("fd00::/8", "fd00::/8", 0),
])
def test_allowlist_entries_are_addresses_networks_and_ports(text, network, port):
    entry = parse_allow_entry(text)
    assert (str(entry.network), entry.port) == (network, port)


@pytest.mark.parametrize("text", ["10.0.0.0/8:53", "10.0.0.2:99999", "[fd00::1", "name.example"])
def test_bad_allowlist_entries_are_refused(text):
    with pytest.raises(ValueError):
        parse_allow_entry(text)


def test_the_agent_refuses_to_start_on_a_bad_response_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("response:\n  mode: enforce\n  rules:\n    miner.exec: [block-flow]\n")
    ran = subprocess.run([sys.executable, "-m", "ebpfguard", "run", "--config", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2
    assert f"{path}:4: 'response.rules.miner.exec': block-flow needs a flow" in ran.stderr
