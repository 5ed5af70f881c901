"""`watch --plain` and `watch --json`: the stream as text lines, for pipes and non-terminals."""

from __future__ import annotations

import re
import socket
from typing import TextIO

from ebpfguard.outputs.sinks import to_json_line
from ebpfguard.watch.format import plain_line
from ebpfguard.watch.source import parse_line, raw_lines

_UNSAFE = re.compile(rb"[^\x20-\x7e]")


def write_plain(conn: socket.socket, out: TextIO) -> None:
    """One line per event: time, sandbox, pid, comm, kind, summary; everything escaped."""
    for line in raw_lines(conn):
        event = parse_line(line)
        if event is not None:
            out.write(plain_line(event) + "\n")
            out.flush()


def write_json(conn: socket.socket, out: TextIO) -> None:
    """The agent's lines as they came. The agent writes ASCII JSON; a line that is not is
    written again through the encoder, so the terminal still never gets a raw control byte."""
    for line in raw_lines(conn):
        if _UNSAFE.search(line):
            event = parse_line(line)
            if event is None:
                continue
            out.write(to_json_line(event))
        else:
            out.write(line.decode("ascii") + "\n")
        out.flush()
