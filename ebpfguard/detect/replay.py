"""`ebpfguard replay`: recorded (or hand-written) JSON Lines events through the detectors.

Minimal events are accepted and completed with defaults (design.md, `replay`); every line
that cannot be used is reported with its number and skipped. Alerts are written as ASCII-only
JSON, one per line, so no argv can forge an extra line or carry a terminal escape.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, BinaryIO, Iterator, Optional, TextIO, Union

from ebpfguard.detect.engine import DetectionEngine

MAX_LINE_BYTES = 1 << 20
# What each kind needs at least; other kinds are passed through as they are.
REQUIRED_FIELDS = {
    "exec": ("argv",),
    "flow": ("direction", "dport", "payload_b64"),
    "connect": ("daddr", "dport"),
    "dns": ("query",),
    "open": ("filename",),
}
SKIPPED_KINDS = frozenset({"alert", "action"})
PROCESS_DEFAULTS = {"pid": None, "ppid": None, "uid": None, "comm": None, "exe": None, "argv_truncated": False, "ancestry": []}

EXIT_NO_ALERTS, EXIT_ALERTS, EXIT_UNUSABLE = 0, 1, 2


class LineError(ValueError):
    """A line that is not a usable event; the message says why."""


def replay(stream: BinaryIO, engine: DetectionEngine, out: TextIO, err: TextIO) -> int:
    """Run every event of `stream` through `engine`; alerts to `out`, problems to `err`.

    Returns 1 if any alert was written, 0 if none, 2 if no line could be used.
    """
    parsed = alerts = 0
    for number, line in numbered_lines(stream):
        try:
            event = parse_line(line)
        except LineError as problem:
            err.write(f"line {number}: {problem}\n")
            continue
        if event is None:
            continue
        parsed += 1
        if event["kind"] in SKIPPED_KINDS:
            continue
        for alert in engine.process(with_defaults(event)):
            out.write(json.dumps(alert, ensure_ascii=True) + "\n")
            alerts += 1
    if parsed == 0:
        err.write("no line of the input is an event\n")
        return EXIT_UNUSABLE
    return EXIT_ALERTS if alerts else EXIT_NO_ALERTS


def numbered_lines(stream: BinaryIO) -> Iterator[tuple[int, Union[bytes, LineError]]]:
    """Lines with their numbers; a line over MAX_LINE_BYTES becomes a LineError (and is skipped)."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES:
            while line and not line.endswith(b"\n"):
                line = stream.readline(MAX_LINE_BYTES)
            yield number, LineError(f"longer than {MAX_LINE_BYTES} bytes; skipped")
            continue
        yield number, line


def parse_line(line: Union[bytes, LineError]) -> Optional[dict]:
    """The event on one line, None for a blank line; LineError if it is not a usable event."""
    if isinstance(line, LineError):
        raise line
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise LineError(f"not UTF-8 (byte 0x{line[problem.start]:02x} at column {problem.start + 1})") from None
    if not text.strip():
        return None
    try:
        event = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as problem:
        raise LineError(f"not JSON: {problem}") from None
    if not isinstance(event, dict):
        raise LineError("an event is a JSON object")
    kind = event.get("kind")
    if not isinstance(kind, str) or not kind:
        raise LineError("the event has no `kind`")
    missing = [name for name in REQUIRED_FIELDS.get(kind, ()) if name not in event and name not in (event.get("process") or {})]
    if missing:
        raise LineError(f"a `{kind}` event needs {', '.join(missing)}")
    if kind == "exec":
        argv = (event.get("process") or {}).get("argv", event.get("argv"))
        if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
            raise LineError("`argv` must be a non-empty list of strings")
    if kind == "flow":
        _check_flow(event)
    return event


def _check_flow(event: dict) -> None:
    """A flow's payload must be base64 and its direction one of the two the agent emits."""
    if event["direction"] not in ("egress", "ingress"):
        raise LineError("`direction` must be egress or ingress")
    payload = event["payload_b64"]
    try:
        if not isinstance(payload, str):
            raise ValueError
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise LineError("`payload_b64` must be a base64 string") from None


def with_defaults(event: dict) -> dict:
    """The event as read, plus defaults for the context a minimal event leaves out."""
    event = dict(event)
    event.setdefault("node", "unknown")
    sandbox = event.get("sandbox")
    event["sandbox"] = {"name": "unknown", **sandbox} if isinstance(sandbox, dict) else {"name": "unknown"}
    process = dict(event["process"]) if isinstance(event.get("process"), dict) else {}
    if event["kind"] == "exec":
        process.setdefault("argv", event.get("argv"))
        # The kernel names a process after the file it executes, cut to 15 bytes.
        executed = event.get("filename") or process["argv"][0]
        if process.get("comm") is None and isinstance(executed, str):
            process["comm"] = executed.rsplit("/", 1)[-1][:15]
    unknown = [name for name in PROCESS_DEFAULTS if name not in process]
    for name in unknown:
        default = PROCESS_DEFAULTS[name]
        process[name] = list(default) if isinstance(default, list) else default
    event["process"] = process
    if unknown:
        known_partial = event.get("partial") if isinstance(event.get("partial"), list) else []
        event["partial"] = sorted({str(name) for name in known_partial} | set(unknown))
    return event


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
