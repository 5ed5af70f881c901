"""The exec join: the arguments sent at execve's entry meet the result sent at its exit.

The kernel sends argv at entry (the only moment the old image's memory holds it) and the
result at exit; userspace joins them by pid, since a process execs one thing at a time.
When entry could not read argv whole (past its bounds, or in pages not faulted in), the
kernel reads it again at exit from the new image's stack, before the program runs, and sends
it in pieces just before the result: that argv, what the program really received, wins.
Nothing falls back to /proc/<pid>/cmdline, which the new program can rewrite first.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Optional

from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.fields import argv_fields, mark_partial, text
from ebpfguard.kernel.events import C, ExecArgsRecord, ExecArgvRecord, ExecRecord

# How a script or binfmt handler may rewrite the front of argv between entry and the new
# image: `#!/bin/sh -e` makes [interpreter, its argument, script path, argv[1:]...].
MAX_INSERTED_ARGS = 3


class ExecJoin:
    """Holds each exec's arguments until its result arrives; at most `max_pending` of them,
    and argv pieces from the stack for at most `max_stack_pending` execs."""

    def __init__(self, envelope: EventEnvelope, max_pending: int = 4096, max_stack_pending: int = 64) -> None:
        self.envelope = envelope
        self.procs = envelope.procs
        self.max_pending = max_pending
        self.max_stack_pending = max_stack_pending
        self._pending: OrderedDict[int, ExecArgsRecord] = OrderedDict()
        self._stack: OrderedDict[int, bytearray] = OrderedDict()

    def on_exec_args(self, rec: ExecArgsRecord) -> None:
        """Remember what an exec asked for, until its result."""
        self._pending[rec.hdr.pid] = rec
        self._pending.move_to_end(rec.hdr.pid)
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def on_exec_argv(self, rec: ExecArgvRecord) -> None:
        """Collect a piece of argv read from the new image's stack, until its result. Pieces
        come in order; one that does not follow the last (one was lost) is not added, so the
        result finds fewer bytes than it announced and argv stays what entry saw."""
        pid = rec.hdr.pid
        pieces = self._stack.get(pid)
        if rec.offset == 0:
            pieces = self._stack[pid] = bytearray()
            self._stack.move_to_end(pid)
            if len(self._stack) > self.max_stack_pending:
                self._stack.popitem(last=False)
        if pieces is not None and len(pieces) == rec.offset:
            pieces += rec.data

    def exec_event(self, rec: ExecRecord) -> dict:
        """The exec event: the result joined with the arguments sent at entry, or with the
        argv read from the new image's stack when the kernel sent one."""
        pid = rec.hdr.pid
        asked = self._pending.pop(pid, None)
        pieces = self._stack.pop(pid, None)
        from_stack = stack_argv(rec, pieces)
        if asked is None and from_stack is None:  # its entry record was lost (counted) or predates us
            return self._without_args(rec)
        comm = text(rec.hdr.comm)
        if from_stack is not None:
            argv_bytes, truncated = from_stack, rec.stack_truncated
        else:
            argv_bytes, truncated = asked.argv, asked.argv_truncated
        filename_bytes = asked.filename if asked is not None else b""
        if rec.retval == 0 and (asked is None or asked.filename_unreadable):
            # /proc/<pid>/exe is the kernel's record of the file it mapped, not the program's.
            filename_bytes = os.fsencode(self.procs.exe_of(pid, "") or "")
        argv = argv_fields(argv_bytes)
        filename = text(filename_bytes)
        if rec.retval == 0:
            exe = self.procs.exe_of(pid, filename)
            self.procs.on_exec(pid, comm, exe, tuple(argv["argv"]))
        else:
            known = self.procs.lookup(pid)
            exe = known.exe if known else None
        event = self.envelope.base("exec", rec.hdr, comm, exe, argv, truncated)
        event["filename"] = filename
        event["retval"] = rec.retval
        if from_stack is not None:
            event["argv_source"] = "stack"
        anomalies = argv_anomalies(asked, rec, from_stack, pieces)
        if anomalies:
            event["argv_anomalies"] = anomalies
        if from_stack is None and asked is not None and asked.argv_unreadable:
            mark_partial(event, "argv")
        return event

    def _without_args(self, rec: ExecRecord) -> dict:
        event = self.envelope.base("exec", rec.hdr, text(rec.hdr.comm), None, None, False)
        mark_partial(event, "argv", "filename")
        event["filename"] = None
        event["retval"] = rec.retval
        return event


def stack_argv(rec: ExecRecord, pieces: Optional[bytearray]) -> Optional[tuple[bytes, ...]]:
    """The argv read from the new image's stack, when every piece the result announced came."""
    if not rec.stack_argv or pieces is None or len(pieces) != rec.stack_size:
        return None
    parts = bytes(pieces).split(b"\0")
    if rec.stack_truncated:
        if parts and parts[-1] == b"":  # cut just after a terminator: no partial argument
            parts.pop()
        return tuple(parts[: rec.stack_argc])
    return tuple(parts[: min(rec.stack_argc, len(parts) - 1)])


def argv_anomalies(asked: Optional[ExecArgsRecord], rec: ExecRecord, from_stack: Optional[tuple[bytes, ...]],
                   pieces: Optional[bytearray]) -> list[str]:
    """What about this argv suggests it was built to hide (sorted names, empty when nothing):

    * `past_entry_bounds`: more arguments or bytes than the entry probe reads;
    * `unreadable_at_entry`: argv in pages the kernel had not faulted in when exec was called;
    * `changed_after_entry`: the argv the program received is not the one entry read (another
      thread rewrote it during the call);
    * `truncated`: longer than even the stack read takes (ARGV_STACK_MAX);
    * `stack_incomplete`: the stack read failed or a piece of it was lost;
    * `stack_held_back`: the sandbox spent its budget of stack reads (it execs huge command
      lines in a loop): argv is what entry read, and the summary counts it.
    """
    if not (rec.stack_argv or rec.stack_unreadable or rec.stack_truncated or rec.stack_held_back
            or (asked is not None and (asked.argv_truncated or asked.argv_unreadable))):
        return []  # the usual exec: argv read whole at entry, nothing read from the stack
    found = set()
    if asked is not None:
        if asked.argv_truncated:
            found.add("past_entry_bounds")
        if asked.argv_unreadable:
            found.add("unreadable_at_entry")
        if from_stack is not None and not asked.argv_unreadable and not _received_what_entry_read(asked, from_stack):
            found.add("changed_after_entry")
    if rec.stack_truncated:
        found.add("truncated")
    if rec.stack_unreadable or (rec.stack_argv and from_stack is None):
        found.add("stack_incomplete")
    if rec.stack_held_back:
        found.add("stack_held_back")
    return sorted(found)


def _received_what_entry_read(asked: ExecArgsRecord, received: tuple[bytes, ...]) -> bool:
    """Whether entry's argv[1:] appears in the received argv right after the few arguments a
    script interpreter may put in front. Entry cuts an argument at ARGV_ARG_READ - 1 bytes
    (and, out of room, its last one anywhere): those need only be a prefix."""
    seen = asked.argv[1:]
    if not seen:
        return True
    cut_at = C["ARGV_ARG_READ"] - 1
    for start in range(1, MAX_INSERTED_ARGS + 2):
        window = received[start:start + len(seen)]
        if len(window) == len(seen) and all(
                got == want or ((len(want) == cut_at or (asked.argv_truncated and i == len(seen) - 1))
                                and got.startswith(want))
                for i, (want, got) in enumerate(zip(seen, window))):
            return True
    return False
