"""Check dashboard JSON against Grafana's own schema, as grafana-foundation-sdk's types carry it.

The SDK's models are generated from Grafana's schema (its CUE kinds). Parsing with them
drops keys the schema does not know and keeps values as given, so a dashboard is valid when
(1) nothing is dropped in the round trip JSON -> model -> JSON, and (2) every value in the
model has its annotated type (enums and literals included).

    python dashboards/schema.py FILE...   exit 1 if any file has problems
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from pathlib import Path

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

# Panel options and field config decode to typed models only for registered panel kinds.
plugins.register_default_plugins()


def problems(data: object) -> list[str]:
    """What makes `data` not a valid Grafana dashboard; empty when it is one."""
    if not isinstance(data, dict):
        return ["a dashboard is a JSON object"]
    try:
        model = Dashboard.from_json(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return [f"does not parse as a dashboard: {type(exc).__name__}: {exc}"]
    found: list[str] = []
    _check_model(model, "dashboard", found)
    back = json.loads(json.dumps(model, cls=JSONEncoder))
    _check_kept(data, back, "dashboard", found)
    return found


def _check_kept(given: object, kept: object, path: str, found: list[str]) -> None:
    """Keys the schema does not know are dropped when parsing: report them."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                found.append(f"{path}.{key}: not in the schema")
            else:
                _check_kept(value, kept[key], f"{path}.{key}", found)
    elif isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        for i, (g, k) in enumerate(zip(given, kept)):
            _check_kept(g, k, f"{path}[{i}]", found)


def _is_model(value: object) -> bool:
    return callable(getattr(value, "to_json", None)) and not isinstance(value, (dict, list))


def _check_model(model: object, path: str, found: list[str]) -> None:
    for attr, hint in typing.get_type_hints(type(model)).items():
        if hasattr(model, attr):
            _check_value(getattr(model, attr), hint, f"{path}.{attr}", found)


def _check_value(value: object, hint: object, path: str, found: list[str]) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (typing.Any, object):
        if _is_model(value):
            _check_model(value, path, found)
    elif origin in (typing.Union, types.UnionType):
        _check_union(value, args, path, found)
    elif origin is typing.Literal:
        if value not in args:
            found.append(f"{path}: {value!r} is not one of {list(args)}")
    elif origin is list:
        if not isinstance(value, list):
            found.append(f"{path}: {value!r} is not a list")
        else:
            for i, item in enumerate(value):
                _check_value(item, args[0] if args else object, f"{path}[{i}]", found)
    elif origin is dict:
        if not isinstance(value, dict):
            found.append(f"{path}: {value!r} is not an object")
        elif args:
            for key, item in value.items():
                _check_value(item, args[1], f"{path}.{key}", found)
    elif hint is type(None):
        if value is not None:
            found.append(f"{path}: {value!r} is not null")
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value not in {m.value for m in hint}:
            found.append(f"{path}: {value!r} is not one of {[m.value for m in hint]}")
    elif hint is bool:
        if not isinstance(value, bool):
            found.append(f"{path}: {value!r} is not a boolean")
    elif hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and isinstance(value, float)):
            found.append(f"{path}: {value!r} is not {'an integer' if hint is int else 'a number'}")
    elif hint is str:
        if not isinstance(value, str):
            found.append(f"{path}: {value!r} is not a string")
    elif isinstance(hint, type):
        if not isinstance(value, hint):
            found.append(f"{path}: {value!r} is not a {hint.__name__}")
        elif _is_model(value):
            _check_model(value, path, found)


def _check_union(value: object, arms: tuple, path: str, found: list[str]) -> None:
    """Optional[X] and unions of models are checked as the one arm that fits, so problems
    nested inside it are reported where they are rather than as "none of the arms"."""
    if value is None and type(None) in arms:
        return
    arms = tuple(a for a in arms if a is not type(None))
    models = [a for a in arms if isinstance(a, type) and isinstance(value, a) and _is_model(value)]
    if models:
        arms = (models[0],)
    if len(arms) == 1:
        _check_value(value, arms[0], path, found)
        return
    for arm in arms:
        trial: list[str] = []
        _check_value(value, arm, path, trial)
        if not trial:
            return
    found.append(f"{path}: {value!r} is none of {[_hint_name(a) for a in arms]}")


def _hint_name(hint: object) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def main(paths: list[str]) -> int:
    status = 0
    for path in paths:
        for problem in problems(json.loads(Path(path).read_text())):
            print(f"{path}: {problem}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
