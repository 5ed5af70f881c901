"""Config overlay and its errors."""

import pytest

from ebpfguard.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_config_loads_with_sandbox_patterns():
    config = load_config()
    assert config["sandbox"]["patterns"] == ["sandbox-*", "agent-*"]


def test_overlay_replaces_only_the_given_keys(tmp_path):
    config = load_config(write(tmp_path, "sandbox:\n  patterns: ['job-*']\n"))
    assert config["sandbox"]["patterns"] == ["job-*"]
    assert config["sandbox"]["matchers"] == load_config()["sandbox"]["matchers"]


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "sandbox:\n  patterns: []\n  patterns_typo: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: unknown key 'sandbox.patterns_typo'"):
        load_config(path)


def test_wrong_type_is_an_error(tmp_path):
    path = write(tmp_path, "probes:\n  drain_interval_ms: soon\n")
    with pytest.raises(ConfigError, match=r":2: 'probes.drain_interval_ms' must be an integer"):
        load_config(path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "probes:\n  a: [1,\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: not valid YAML"):
        load_config(path)


def test_missing_and_non_utf8_files_are_clear_errors(tmp_path):
    non_utf8 = tmp_path / "bad.yaml"
    non_utf8.write_bytes(b"probes: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(non_utf8)


def test_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == load_config()
