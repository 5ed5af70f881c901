"""`summary` events: what the kernel held back (per-sandbox rate limit) or lost (ring full),
per sandbox, each second.

The kernel counts per (cgroup id, kind) in maps that the agent reads and empties each second
(ebpfguard/kernel/load.py); `per_cgroup` groups those counts by cgroup, and `summary_event`
names the sandbox behind a cgroup id.
Nothing a rate limit refuses is silently gone: it is counted here, per sandbox and kind.
"""

from __future__ import annotations

from typing import Mapping

from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.fields import mark_partial
from ebpfguard.kernel.events import Header

CgroupCounts = Mapping[tuple[int, str], int]


def per_cgroup(counts: CgroupCounts) -> dict[int, dict[str, int]]:
    """{(cgroup id, kind): n} as {cgroup id: {kind: n}}, zero counts left out."""
    out: dict[int, dict[str, int]] = {}
    for (cgroup_id, kind), n in counts.items():
        if n > 0:
            out.setdefault(cgroup_id, {})[kind] = n
    return out


def summary_event(envelope: EventEnvelope, cgroup_id: int, held_back: Mapping[str, int],
                  lost: Mapping[str, int], window_s: float) -> dict:
    """A `summary` event: `held_back` counts per record kind (socket, connect, flow) that the
    per-sandbox rate limit summarised instead of sending, `lost` counts per probe family that
    a full ring buffer could not take, over the last `window_s` seconds. It is about a sandbox,
    not a process: `process.pid` is null and `process` is listed in `partial`."""
    hdr = Header(envelope.clock.now_ktime_ns(), cgroup_id, 0, 0, 0, b"")
    event = envelope.base("summary", hdr, "", None, None, False)
    event["process"]["pid"] = None
    event["process"]["uid"] = None
    event["partial"] = [field for field in event.get("partial", ()) if field == "sandbox"]
    mark_partial(event, "process")
    event["held_back"] = dict(sorted(held_back.items()))
    event["lost"] = dict(sorted(lost.items()))
    event["window_s"] = round(window_s, 3)
    return event
