"""The exec join: the arguments sent at execve's entry meet the result sent at its exit.

The kernel sends argv at entry (the only moment the old image's memory holds it) and the
result at exit; userspace joins them by pid, since a process execs one thing at a time.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.fields import argv_fields, mark_partial, text
from ebpfguard.kernel.events import ExecArgsRecord, ExecRecord


class ExecJoin:
    """Holds each exec's arguments until its result arrives; at most `max_pending` of them."""

    def __init__(self, envelope: EventEnvelope, max_pending: int = 4096) -> None:
        self.envelope = envelope
        self.procs = envelope.procs
        self.max_pending = max_pending
        self._pending: OrderedDict[int, ExecArgsRecord] = OrderedDict()

    def on_exec_args(self, rec: ExecArgsRecord) -> None:
        """Remember what an exec asked for, until its result."""
        self._pending[rec.hdr.pid] = rec
        self._pending.move_to_end(rec.hdr.pid)
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def exec_event(self, rec: ExecRecord) -> dict:
        """The exec event: the result joined with the arguments sent at entry."""
        asked = self._pending.pop(rec.hdr.pid, None)
        if asked is None:  # its entry record was lost (counted by the kernel) or predates us
            return self._without_args(rec)
        pid = rec.hdr.pid
        comm = text(rec.hdr.comm)
        argv_bytes, filename_bytes, source = asked.argv, asked.filename, None
        if rec.retval == 0 and (asked.argv_unreadable or asked.filename_unreadable):
            # The kernel could not read them without faulting pages in; the new image's
            # /proc entry shows what it was started with (a miner lives long enough for this).
            from_proc = self.procs.read_cmdline(pid)
            if from_proc is not None:
                argv_bytes, source = from_proc, "proc"
            if asked.filename_unreadable:
                filename_bytes = os.fsencode(self.procs.exe_of(pid, "") or "")
        argv = argv_fields(argv_bytes)
        filename = text(filename_bytes)
        if rec.retval == 0:
            exe = self.procs.exe_of(pid, filename)
            self.procs.on_exec(pid, comm, exe, tuple(argv["argv"]))
        else:
            known = self.procs.lookup(pid)
            exe = known.exe if known else None
        event = self.envelope.base("exec", rec.hdr, comm, exe, argv, asked.argv_truncated)
        event["filename"] = filename
        event["retval"] = rec.retval
        if source is not None:
            event["argv_source"] = source
        elif asked.argv_unreadable:
            mark_partial(event, "argv")
        return event

    def _without_args(self, rec: ExecRecord) -> dict:
        event = self.envelope.base("exec", rec.hdr, text(rec.hdr.comm), None, None, False)
        mark_partial(event, "argv", "filename")
        event["filename"] = None
        event["retval"] = rec.retval
        return event
