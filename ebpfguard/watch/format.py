"""How events read on a terminal: escaped text, one-line summaries, and plain lines.

Every string here may come from a sandbox (argv, comm, paths, DNS names). A terminal acts on
control characters and escape sequences, so each is shown as a visible escape instead:
nothing a sandbox writes can clear, move or retitle the operator's screen. Rich markup is a
second such language: the Textual views wrap these strings in `Text`, never parse them.
"""

from __future__ import annotations

import errno
import shlex
import unicodedata
from typing import Any


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _needs_escape(ch: str) -> bool:
    # Cc: C0/C1 controls and DEL; Cf: format characters (bidi overrides that reorder what
    # the operator reads, zero-width joiners); Cs/Co/Cn: surrogates, private, unassigned;
    # Zl/Zp: line and paragraph separators, which some terminals treat as newlines.
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def safe(value: Any) -> str:
    """`value` as text with every control or invisible character written as an escape."""
    text = "" if value is None else str(value)
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(_escape_char(ch) if _needs_escape(ch) else ch for ch in text)


def argv_text(argv: list) -> str:
    """argv as a shell would read it back, escaped."""
    return safe(" ".join(shlex.quote(str(arg)) for arg in argv))


def errno_name(retval: Any) -> str:
    """-2 -> ENOENT (the syscall's result as the kernel returned it)."""
    try:
        return errno.errorcode.get(-int(retval), str(retval))
    except (TypeError, ValueError):
        return safe(retval)


def destination(event: dict) -> str:
    """host:port of a connect or flow, or ''."""
    if "daddr" not in event:
        return ""
    daddr = safe(event.get("daddr"))
    host = f"[{daddr}]" if ":" in daddr else daddr
    return f"{host}:{event.get('dport')}"


def summary(event: dict) -> str:
    """What happened, in one line, escaped."""
    kind = event.get("kind")
    process = event.get("process") or {}
    if kind == "alert":
        return safe(f"{event.get('severity', '?').upper()} {event.get('rule', '?')}: {event.get('summary', '')}")
    if kind == "exec":
        text = argv_text(process.get("argv") or [event.get("filename", "")])
        retval = event.get("retval", 0)
        # A failed exec (PATH lookups fail often) says so first, with what it tried.
        return f"failed {errno_name(retval)}: {safe(event.get('filename'))}  {text}" if retval else text
    if kind == "exit":
        code = event.get("exit_code")
        return "killed by a signal" if code is None else f"exit code {code}"
    if kind == "connect":
        retval = event.get("retval", 0)
        return f"to {destination(event)}" + (f"  ({errno_name(retval)})" if retval else "")
    if kind == "flow":
        sni = f" sni {safe(event['sni'])}" if event.get("sni") else ""
        return f"{event.get('direction', '?')} {destination(event)}{sni}"
    if kind == "dns":
        return safe(f"{event.get('qtype', '?')} {event.get('query', '')}")
    if kind == "socket":
        return safe(f"{event.get('family')} {event.get('type')} proto {event.get('protocol')}")
    if kind == "open":
        return safe(event.get("filename"))
    if kind in ("escape", "tamper"):
        where = event.get("to_cgroup") or event.get("target") or event.get("filename") or event.get("bpf_cmd")
        return safe(f"{event.get('what')} {where or ''}".rstrip())
    if kind == "action":
        return action_summary(event)
    if kind == "summary":
        counts = {**(event.get("held_back") or {}), **{f"lost {k}": v for k, v in (event.get("lost") or {}).items()}}
        return safe("held back " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" in {event.get('window_s')}s")
    if kind == "skipped":
        return f"this viewer read too slowly: the agent skipped {event.get('missed')} events for it"
    return ""


def action_summary(event: dict) -> str:
    """`block-flow flow 8231 to 203.0.113.9:3333 for miner.stratum: done` (and why, if not done)."""
    target = event.get("target") if isinstance(event.get("target"), dict) else {}
    parts = []
    if target.get("flow_id") is not None:
        parts.append(f"flow {target['flow_id']}")
    if target.get("daddr") is not None:
        parts.append(f"to {destination(target)}")
    for dest in target.get("destinations") or ():
        if isinstance(dest, dict):
            parts.append(f"to {destination(dest)}")
    if target.get("pid") is not None:
        parts.append(f"pid {target['pid']}")
    if target.get("cgroup") and not parts:
        parts.append(f"cgroup {target['cgroup']}")
    why = f" ({event['reason']})" if event.get("reason") else ""
    return safe(f"{event.get('action')} {' '.join(parts)} for {event.get('rule')}: {event.get('outcome')}{why}")


def short_time(event: dict) -> str:
    """HH:MM:SS.mmm of the event's RFC 3339 UTC time."""
    stamp = str(event.get("time", ""))
    return safe(stamp[11:23]) if len(stamp) >= 23 else safe(stamp)


def kind_label(event: dict) -> str:
    return safe(event.get("kind", "?"))


def sandbox_name(event: dict) -> str:
    return safe((event.get("sandbox") or {}).get("name", "?"))


def plain_line(event: dict) -> str:
    """One line per event for pipes: time, sandbox, pid, comm, kind, summary (tab-free)."""
    process = event.get("process") or {}
    return " ".join((
        short_time(event) or "-",
        sandbox_name(event),
        str(process.get("pid", "-")),
        safe(process.get("comm", "-")),
        kind_label(event),
        summary(event),
    ))
