"""Agent configuration: the embedded default YAML, overlaid by the user's file.

A user file may only use keys that exist in the default, with values of the same type and,
for numbers, within the range RANGES gives; anything else is one error naming the file, line
and key. The file is bounded (size, nesting, entries) before it is built: see yamlinput.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from ebpfguard.yamlinput import YamlLimitError, check_yaml_limits

Config = dict

# Numeric keys and their allowed range (inclusive; None: unbounded). No negative interval, no
# zero size: either would stall the loop or size a table to nothing.
RANGES: dict[str, tuple[Optional[float], Optional[float]]] = {
    "probes.ring_buffer_pages": (1, 1 << 20),
    "probes.drain_interval_ms": (1, 10_000),
    "probes.idle_drain_interval_ms": (1, 60_000),
    "output.flush_interval_ms": (1, 10_000),
    "output.max_bytes": (0, None),
    "output.keep": (1, 1000),
    "process_table.max_processes": (1, 100_000_000),
    "process_table.max_argv_bytes": (1 << 16, 1 << 40),
    "process_table.ancestry_depth": (0, 4096),
    "sandbox.cache_size": (1, 100_000_000),
    "gpu.poll_interval_s": (0.1, 86_400),
    "limits.event_budget_ms": (1, 60_000),
    "limits.file_read_timeout_ms": (1, 60_000),
    "limits.exec_files_budget_ms": (1, 600_000),
    "limits.file_read_bytes": (1, 1 << 30),
    "limits.detect_queue": (1, 100_000_000),
    "metrics.max_sandbox_labels": (1, 1_000_000),
    "metrics.sandbox_label_retention_s": (0, None),
    "logging.warn_interval_s": (0, None),
    "detect.dedup_window_s": (0, None),
    "detect.dedup_max_keys": (1, None),
    "viewer.buffer_bytes": (1024, None),
    "viewer.max_viewers": (1, 65_536),
}


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file, line and key."""


# Mappings whose keys are the user's (rule ids), not the default's: their values are checked
# by the section's own parser (ebpfguard/respond/config.py), which reports lines with key_line().
FREE_MAPPINGS = {"response.rules"}

# YAML 1.1 reads an unquoted `off` as false: for these keys that means the string "off".
OFF_STRINGS = {"response.mode"}


def default_config_text() -> str:
    return resources.files("ebpfguard").joinpath("default_config.yaml").read_text()


def load_config(path: Optional[Path] = None) -> Config:
    """The default configuration, overlaid by `path` when given."""
    config = yaml.safe_load(default_config_text())
    if path is None:
        return config
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        check_yaml_limits(text)
        node = yaml.compose(text)
    except YamlLimitError as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if node is None:
        return config
    lines: dict[str, int] = {}
    merged = _overlay(config, node, str(path), "", lines)
    _check_sections(merged, str(path), lines)
    return merged


def _check_sections(config: Config, path: str, lines: Mapping[str, int]) -> None:
    """Checks that need more than a type: each names the dotted key it found wrong."""
    from ebpfguard.outputs.settings import OutputConfigError, check_outputs

    try:
        check_outputs(config.get("outputs"))
    except OutputConfigError as exc:
        key = exc.key
        while key not in lines and "." in key:  # a default the user left: point at its section
            key = key.rsplit(".", 1)[0]
        where = f"{path}:{lines[key]}" if key in lines else path
        raise ConfigError(f"{where}: '{exc.key}': {exc.message}") from None


def _overlay(base: Mapping[str, Any], node: yaml.Node, path: str, prefix: str, lines: dict) -> dict:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {prefix or 'the file'} must be a mapping")
    merged = copy.deepcopy(dict(base))
    for key_node, value_node in node.value:
        key = key_node.value
        dotted = f"{prefix}{key}"
        line = key_node.start_mark.line + 1
        lines[dotted] = line
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            raise ConfigError(f"{path}:{line}: unknown key '{dotted}' (known here: {known})")
        default = base[key]
        if dotted in FREE_MAPPINGS:
            value = yaml.safe_load(yaml.serialize(value_node))
            if not isinstance(value, dict):
                raise ConfigError(f"{path}:{line}: '{dotted}' must be a mapping, not {_type_name(value)}")
            merged[key] = value
            continue
        if isinstance(default, dict):
            merged[key] = _overlay(default, value_node, path, dotted + ".", lines)
            continue
        value = yaml.safe_load(yaml.serialize(value_node))
        if dotted in OFF_STRINGS and value is False:
            value = "off"
        if not _same_type(default, value):
            raise ConfigError(
                f"{path}:{line}: '{dotted}' must be {_type_name(default)}, not {_type_name(value)}"
            )
        _check_range(dotted, value, f"{path}:{line}")
        merged[key] = value
    return merged


def _check_range(dotted: str, value: Any, where: str) -> None:
    low, high = RANGES.get(dotted, (None, None))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if low is not None and value < low:
        raise ConfigError(f"{where}: '{dotted}' must be at least {low}, not {value}")
    if high is not None and value > high:
        raise ConfigError(f"{where}: '{dotted}' must be at most {high}, not {value}")


def key_line(path: Optional[Path], keys: tuple[str, ...]) -> Optional[int]:
    """The line (1-based) of a nested key in a YAML file, or None when the file does not
    set it (the value is the default's) or cannot be read."""
    if path is None:
        return None
    try:
        node = yaml.compose(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        found = next(((k, v) for k, v in node.value if k.value == key), None)
        if found is None:
            return None
        line, node = found[0].start_mark.line + 1, found[1]
    return line


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(default) is type(value)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return isinstance(value, int) or isinstance(default, float)
    if default is None:
        return True
    return isinstance(value, type(default))


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
