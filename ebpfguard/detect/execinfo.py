"""What an `exec` event ran: the program's name and its arguments, as detectors need them."""

from __future__ import annotations

import posixpath
from typing import Callable, Optional, Sequence

from ebpfguard.detect.registry import Event

# Multi-call binaries whose first argument names the applet: `busybox nc -e /bin/sh ...`.
MULTICALL = ("busybox", "toybox", "dropbearmulti")


def basename(path: str) -> str:
    """The last path component (`/usr/bin/ssh` -> `ssh`)."""
    return posixpath.basename(path.rstrip("/")) if path else ""


def exec_succeeded(event: Event) -> bool:
    """False for a failed execve (negative `retval`): the image never ran.

    A PATH search (`execvp`) makes one failed call per directory before the one that works,
    all from the same pid; only the call that succeeded describes a running program.
    """
    retval = event.get("retval", 0)
    return not isinstance(retval, int) or retval >= 0


# The last event each answer was computed for, and the answer: every exec detector asks for
# the same event's argv and program in turn. Keyed by the event object itself (kept alive
# by the entry, so its identity cannot be reused); callers get their own copies of lists.
_last_argv: tuple = (None, [])
_last_program: tuple = (None, ("", []))


def exec_argv(event: Event) -> list[str]:
    """The argv of an exec event, top-level (minimal replay form) or under `process`."""
    return list(_argv_of(event))


def _argv_of(event: Event) -> list[str]:
    """exec_argv's answer as remembered: not to be handed out (callers may change theirs)."""
    global _last_argv
    last_event, argv = _last_argv
    if last_event is not event:
        raw = event.get("argv")
        if raw is None:
            raw = (event.get("process") or {}).get("argv")
        argv = [str(a) for a in raw or ()]
        _last_argv = (event, argv)
    return argv


def program_and_args(event: Event) -> tuple[str, list[str]]:
    """The program's name and the arguments after argv[0].

    The name comes from the file the kernel was asked to run (argv[0] is free text the caller
    chooses), falling back to `process.exe`, then argv[0]. Multi-call binaries are unwrapped so
    `busybox nc ...` reads as `nc ...`.
    """
    global _last_program
    last_event, (last_name, last_args) = _last_program
    if last_event is event:
        return last_name, list(last_args)
    argv = _argv_of(event)
    filename = event.get("filename") or ""
    # fexecve() and friends run `/dev/fd/N` or `/proc/self/fd/N`: that name says nothing.
    name = "" if filename.startswith(("/dev/fd/", "/proc/")) else basename(filename)
    if not name:
        name = basename((event.get("process") or {}).get("exe") or "")
    if not name and argv:
        name = basename(argv[0])
    args = argv[1:]
    if name in MULTICALL and args:
        name, args = basename(args[0]), args[1:]
    _last_program = (event, (name, args))
    return name, list(args)


# A command line longer than this (in characters) is not remembered by NoFindings: its key
# would hold the whole argv (up to ARGV_STACK_MAX bytes from the stack read).
MAX_KEY_ARGV_CHARS = 2048
_last_key: tuple = (None, None)


def exec_key(event: Event) -> Optional[tuple]:
    """Everything the exec rules read of an exec event, as one hashable value; None when the
    event has another shape than the enricher's (or replay's JSON) gives, or a long argv.

    Two events with the same key get the same answer from a rule that reads nothing else (no
    file, no state): sandbox, pid and time are not in it, except whether the sandbox is `host`.
    Remembered for the last event, like program_and_args: every exec rule asks in turn."""
    global _last_key
    last_event, key = _last_key
    if last_event is event:
        return key
    key = _key_of(event)
    _last_key = (event, key)
    return key


_TEXT_TYPES = (str, type(None))
_TEXT_ONLY = {str}


def _key_of(event: Event) -> Optional[tuple]:
    process = event.get("process") or {}
    if type(process) is not dict:
        return None
    filename, exe, comm = event.get("filename"), process.get("exe"), process.get("comm")
    if type(filename) not in _TEXT_TYPES or type(exe) not in _TEXT_TYPES or type(comm) not in _TEXT_TYPES:
        return None
    argv, top_argv, anomalies = _texts(process.get("argv")), _texts(event.get("argv")), _texts(event.get("argv_anomalies"))
    if argv is False or top_argv is False or anomalies is False:
        return None
    truncated, retval = process.get("argv_truncated"), event.get("retval", 0)
    if (truncated is not None and type(truncated) is not bool) or (retval is not None and type(retval) is not int):
        return None
    return (filename, exe, comm, argv, top_argv, anomalies, truncated, retval, sandbox_name(event) == "host")


def _texts(value: object):
    """A list of strings as a tuple, None as None; False for anything else or a long one."""
    if value is None:
        return None
    if type(value) is not list or len(value) > MAX_KEY_ARGV_CHARS:
        return False
    texts = tuple(value)
    if not set(map(type, texts)) <= _TEXT_ONLY or sum(map(len, texts)) > MAX_KEY_ARGV_CHARS:
        return False
    return texts


class NoFindings:
    """Exec keys (exec_key) a rule found nothing in: most execs on a host repeat a few command
    lines, and a pure rule need not read them again. Only answers without a finding are kept,
    so no alert's evidence is ever shared; at most `capacity` keys, then it starts afresh."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._keys: set = set()

    def __contains__(self, key: Optional[tuple]) -> bool:
        return key is not None and key in self._keys

    def add(self, key: Optional[tuple]) -> None:
        """Remember that `key` raised nothing (a None key is not remembered)."""
        if key is None:
            return
        if len(self._keys) >= self.capacity:
            self._keys.clear()
        self._keys.add(key)

    def findings(self, key: Optional[tuple], find: Callable[[], list]) -> list:
        """`find()`, unless `key` found nothing before; a key that finds nothing is remembered."""
        if key in self:
            return []
        found = find()
        if not found:
            self.add(key)
        return found


def sandbox_name(event: Event) -> str:
    """The sandbox an event came from; replay's default for a missing one is `unknown`."""
    sandbox = event.get("sandbox") or {}
    return str(sandbox.get("name") or "unknown")


def event_pid(event: Event) -> Optional[int]:
    """The thread-group id of the event's process, when the event names one."""
    pid = (event.get("process") or {}).get("pid")
    return pid if isinstance(pid, int) else None


def first_positional(args: Sequence[str]) -> Optional[str]:
    """The first argument that is not an option (does not start with `-`)."""
    return next((a for a in args if not a.startswith("-")), None)
