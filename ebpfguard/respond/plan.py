"""What an alert's actions would act on, and why some must not: pure functions of the alert,
the response configuration and who the agent is.

Targets come only from the alert (the event that raised it): the flow its socket cookie
names, the destination it connected or sent to, its sandbox, its process. The guards keep
actions off `host` (unless listed by name), off sandboxes not listed, and off the agent
itself: its own cgroup (and, for actions on a whole sandbox, any cgroup above it), its own pid
and its parents.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from ebpfguard.respond.cgroups import contains
from ebpfguard.respond.config import ResponseConfig


# Actions on a whole sandbox subtree; the others act on one flow or one process.
SANDBOX_ACTIONS = frozenset({"deny-connect", "quarantine", "freeze"})


def _process_cgroup(sandbox: dict) -> Optional[str]:
    """The cgroup the alert's process was in (lineage may name the sandbox it came from)."""
    return sandbox.get("current_cgroup") or sandbox.get("cgroup")


@dataclass(frozen=True)
class Self:
    """The agent, as guards need it."""

    pid: int
    ancestors: frozenset[int]
    cgroup: Optional[str]  # its cgroup v2 path


@dataclass
class Planned:
    """One action for one alert: its target, or why it is not taken."""

    action: str
    target: dict = field(default_factory=dict)
    outcome: Optional[str] = None  # "refused" or "skipped" when not taken
    reason: Optional[str] = None


def flow_of(event: dict) -> Optional[int]:
    """The socket cookie an alert's event names: a flow's `flow_id`, a connect's `sock_cookie`."""
    kind = event.get("kind")
    cookie = event.get("flow_id") if kind == "flow" else event.get("sock_cookie") if kind == "connect" else None
    return cookie if isinstance(cookie, int) and cookie > 0 else None


def _address(value) -> Optional[str]:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def destinations_of(event: dict) -> list[tuple[str, int]]:
    """(address, port) the event names: a connect's or flow's remote side; the A/AAAA answers
    of a DNS response, on every port (0)."""
    kind = event.get("kind")
    if kind in ("connect", "flow"):
        address, port = _address(str(event.get("daddr"))), event.get("dport")
        return [(address, port)] if address and isinstance(port, int) and 0 < port < 65536 else []
    if kind == "dns":
        found = []
        for answer in event.get("answers") or ():
            if isinstance(answer, dict) and answer.get("type") in ("A", "AAAA"):
                address = _address(str(answer.get("value")))
                if address:
                    found.append((address, 0))
        return found
    return []


def sandbox_allowed(name: str, config: ResponseConfig) -> Optional[str]:
    """Why actions must not touch this sandbox, or None when they may."""
    if name == "host":
        return None if "host" in config.sandboxes else "host processes are acted on only when response.sandboxes lists host"
    if name == "unknown":
        return "the alert's sandbox is unknown (its cgroup was gone before it was seen)"
    if not any(fnmatch.fnmatchcase(name, glob) for glob in config.sandboxes if glob != "host"):
        return "the sandbox is not in response.sandboxes"
    return None


def plan(alert: dict, action: str, config: ResponseConfig, agent: Self, sandbox_root: Optional[str]) -> Planned:
    """The target of `action` for `alert`, or the reason it is refused or skipped.

    `sandbox_root` is the cgroup path of the top of the alert's sandbox (None when unknown)."""
    event = alert.get("event") or {}
    sandbox = alert.get("sandbox") or {}
    process = alert.get("process") or {}
    name = str(sandbox.get("name"))
    why = sandbox_allowed(name, config)
    if why is not None:
        return Planned(action, {"sandbox": name}, "refused", why)
    if sandbox_root is None:
        return Planned(action, {"sandbox": name}, "skipped", "the sandbox's cgroup is gone")
    if action in SANDBOX_ACTIONS:
        if sandbox_root == "/":
            return Planned(action, {"sandbox": name, "cgroup": sandbox_root}, "refused", "the root cgroup")
        if agent.cgroup is not None and contains(sandbox_root, agent.cgroup):
            return Planned(action, {"sandbox": name, "cgroup": sandbox_root}, "refused",
                           "the agent runs in this cgroup or below it")
    elif agent.cgroup is not None and _process_cgroup(sandbox) == agent.cgroup:
        return Planned(action, {"sandbox": name, "cgroup": agent.cgroup}, "refused",
                       "the process is in the agent's own cgroup")
    pid = process.get("pid")
    if pid is not None and (pid == agent.pid or pid in agent.ancestors):
        return Planned(action, {"sandbox": name, "pid": pid}, "refused", "the process is the agent or its parent")
    if action == "block-flow":
        cookie = flow_of(event)
        if cookie is None:
            return Planned(action, {"sandbox": name}, "skipped", "the alert names no flow")
        target = {"sandbox": name, "flow_id": cookie, "daddr": event.get("daddr"), "dport": event.get("dport")}
        return Planned(action, target)
    if action == "deny-connect":
        dests = destinations_of(event)
        target = {"sandbox": name, "cgroup": sandbox_root,
                  "destinations": [{"daddr": a, "dport": p} for a, p in dests]}
        return Planned(action, target)
    if action == "kill":
        if not isinstance(pid, int) or pid <= 1:
            return Planned(action, {"sandbox": name}, "skipped", "the alert names no process")
        return Planned(action, {"sandbox": name, "pid": pid, "comm": process.get("comm")})
    return Planned(action, {"sandbox": name, "cgroup": sandbox_root})
