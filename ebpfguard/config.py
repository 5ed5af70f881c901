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
    return _overlay(config, node, str(path), "")


def _overlay(base: Mapping[str, Any], node: yaml.Node, path: str, prefix: str) -> dict:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {prefix or 'the file'} must be a mapping")
    merged = copy.deepcopy(dict(base))
    for key_node, value_node in node.value:
        key = key_node.value
        dotted = f"{prefix}{key}"
        line = key_node.start_mark.line + 1
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            raise ConfigError(f"{path}:{line}: unknown key '{dotted}' (known here: {known})")
        default = base[key]
        if isinstance(default, dict):
            merged[key] = _overlay(default, value_node, path, dotted + ".")
            continue
        value = yaml.safe_load(yaml.serialize(value_node))
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
