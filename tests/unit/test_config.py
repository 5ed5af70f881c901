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


@pytest.mark.parametrize("text, key", [
    ("probes:\n  drain_interval_ms: -5\n", "probes.drain_interval_ms"),
    ("process_table:\n  max_processes: 0\n", "process_table.max_processes"),
    ("output:\n  keep: 0\n", "output.keep"),
    ("limits:\n  file_read_timeout_ms: 0\n", "limits.file_read_timeout_ms"),
])
def test_numbers_out_of_range_name_file_line_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}:2: '{key}' must be at least"):
        load_config(path)


def test_every_range_names_a_numeric_key_of_the_default():
    from ebpfguard.config import RANGES

    config = load_config()
    for dotted in RANGES:
        section, key = dotted.split(".")
        assert isinstance(config[section][key], (int, float)), dotted


def test_deep_nesting_is_a_clear_error_not_a_recursion_error(tmp_path):
    path = write(tmp_path, "sandbox:\n  patterns: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: nested more than 32 levels deep"):
        load_config(path)


def test_huge_lists_are_a_clear_error(tmp_path):
    path = write(tmp_path, "sandbox:\n  patterns:\n" + "".join(f"  - p{i}\n" for i in range(100_001)))
    with pytest.raises(ConfigError, match=r"a list with more than 100000 entries"):
        load_config(path)
