"""Our floors: the agent's own hooks without the agent behind them.

    python -m bench.floor empty    every hook of every probe family, each with an empty body
    python -m bench.floor unread   the real probes, doing their full work into a ring buffer
                                   that nobody reads (a large one, so it does not fill in a round)

Prints `ready` on stderr once attached; on SIGTERM prints `{"lost": {family: n}}` on stdout
and detaches. What ebpfguard costs above `unread` is its userspace; above `empty`, its probes.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ebpfguard.config import load_config
from ebpfguard.kernel.links import CgroupLink, link_to_cgroup
from ebpfguard.kernel.load import PROBE_FAMILIES, ProbeSet, ensure_tracefs
from ebpfguard.enrich.sandbox import cgroup_root_from_proc

# 64 MiB: a round's records fit, so `unread` measures the probes' work, not a full buffer's
# quick failures. Losses are still reported, so a round that filled it shows.
UNREAD_RING_PAGES = 16384


def empty_program_text() -> str:
    """The same hooks as the agent, bodies empty: cgroup hooks allow (return 1), as ours do."""
    parts = []
    for family in PROBE_FAMILIES.values():
        parts += [f"TRACEPOINT_PROBE({cat}, {event}) {{ return 0; }}\n" for cat, event in family.tracepoints]
        parts += [f"int {prog.function}(void *ctx) {{ return 1; }}\n" for prog in family.cgroup_programs]
    return "".join(parts)


def load_empty(cgroup_root: str) -> tuple[object, list[CgroupLink]]:
    """Compile and attach the empty hooks (bcc attaches TRACEPOINT_PROBEs itself)."""
    from bcc import BPF, BPFAttachType

    ensure_tracefs()
    bpf = BPF(text=empty_program_text())
    links = []
    for family in PROBE_FAMILIES.values():
        for prog in family.cgroup_programs:
            attach_type = getattr(BPFAttachType, prog.attach_type)
            fn = bpf.load_func(prog.function, getattr(BPF, prog.prog_type), attach_type=attach_type)
            links.append(link_to_cgroup(fn.fd, cgroup_root, attach_type))
    return bpf, links


def wait_for_term() -> None:
    """Block until SIGTERM or SIGINT."""
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("empty", "unread"))
    kind = parser.parse_args().kind
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    cgroup_root = cgroup_root_from_proc()
    if kind == "empty":
        bpf, links = load_empty(cgroup_root)
        print("ready", file=sys.stderr, flush=True)
        wait_for_term()
        lost: dict[str, int] = {}
        for link in links:
            link.close()
        bpf.cleanup()
    else:
        config = load_config(None)
        config["probes"]["ring_buffer_pages"] = UNREAD_RING_PAGES
        probes = ProbeSet.load(config, cgroup_root, lambda _records: None)
        print("ready", file=sys.stderr, flush=True)
        wait_for_term()
        lost = probes.lost()
        probes.close()
    print(json.dumps({"lost": lost}), flush=True)


if __name__ == "__main__":
    main()
