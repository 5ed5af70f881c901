"""Responses: how soon an action takes effect, and what enforcing costs per packet.

    sudo .venv/bin/python -m bench.response [--runs 30] [--rounds 3] [--seconds 2]

Needs root (it starts agents and makes cgroups); everything stays on loopback, in cgroups
named `sandbox-rbench<id>-*` (the agents act on no other sandbox).

1. Time to effect, over `--runs` repetitions, in one enforcing agent:
   * block-flow: a sandboxed client sends a stratum hello, then a stamped line every 0.5 ms;
     the effect is bounded by the send time of the last line the server still received
     (every later line was dropped). Also the action event's own `delay_ms` (the offending
     event's kernel timestamp to the map update).
   * deny-connect: a sandboxed client sends a TLS ClientHello naming a pool, then connects
     again every 0.5 ms until one fails with EPERM.
2. Per-packet cost of the cgroup_skb egress program itself, with BPF_PROG_TEST_RUN (the
   kernel runs the loaded program `repeat` times on one TCP packet and reports ns per run:
   insensitive to the host's load, unlike throughput): compiled without the checks (mode
   off), enforcing with nothing in force, with a flow blocked (a hash lookup per packet),
   with a sandbox quarantined (an ancestor lookup per packet; a test packet has no socket,
   so the walk stops at its first level).
3. Throughput: a bulk loopback transfer from a sandbox (never acted on) to a host
   listener, in alternating rounds: no agent; an agent with responses off (the checks are not
   compiled in); enforcing with nothing in force (one array lookup per packet); with a
   blocked flow elsewhere (plus a hash lookup per packet); with a quarantined sandbox
   elsewhere (plus an ancestor cgroup lookup per packet). Throughput ratios are against the
   enforcing agent with nothing in force, measured in the same round.

The host is shared and noisy: read ratios near 1 as "no difference measured".
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from bench.stats import percentile
from ebpfguard.config import load_config
from ebpfguard.enrich.sandbox import cgroup_root_from_proc
from ebpfguard.kernel.links import SYS_BPF

PREFIX = f"sandbox-rbench{uuid.uuid4().hex[:6]}-"
WALLET = "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD"


def stratum_hello(n: int) -> str:
    """A stratum subscribe, told apart by its id."""
    return '{"id": %d, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}' % n

STAMPER = textwrap.dedent("""
    import socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    start = time.time_ns()
    s.send(sys.argv[2].encode() + b"\\n")
    print(start, flush=True)
    end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        try:
            s.send(b"t %d\\n" % time.time_ns())
        except BlockingIOError:
            pass
        time.sleep(0.0005)
""")

DENIED = textwrap.dedent("""
    import errno, socket, ssl, sys, time
    port = int(sys.argv[1])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    start = time.time_ns()
    raw = socket.create_connection(("127.0.0.1", port))
    try:
        ctx.wrap_socket(raw, server_hostname="gulf.moneroocean.stream")
    except (ssl.SSLError, OSError):
        pass
    end = time.monotonic() + 10
    while time.monotonic() < end:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
        except PermissionError:
            print(start, time.time_ns(), flush=True)
            break
        finally:
            s.close()
        time.sleep(0.0005)
""")

BULK = textwrap.dedent("""
    import socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    chunk = b"x" * (1 << 20)
    sent, end = 0, time.monotonic() + float(sys.argv[2])
    start = time.monotonic()
    while time.monotonic() < end:
        s.sendall(chunk)
        sent += len(chunk)
    print(sent / (time.monotonic() - start), flush=True)
""")


class Sink:
    """A loopback listener: reads everything; keeps the newest send stamp of each connection."""

    def __init__(self, reply: Optional[bytes] = None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.last_stamp: dict[str, int] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        name, tail = None, b""
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                if self.reply is not None:
                    conn.sendall(self.reply)
                if len(data) > 4096:  # bulk: nothing to parse
                    continue
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    if name is None:
                        name = line.decode(errors="replace")
                    elif line.startswith(b"t "):
                        self.last_stamp[name] = int(line[2:])

    def close(self) -> None:
        self.sock.close()


class Agent:
    """`ebpfguard run` with a response config, its events read from its output file."""

    def __init__(self, workdir: Path, mode: str) -> None:
        config = workdir / f"{mode}.yaml"
        config.write_text(textwrap.dedent(f"""
            response:
              mode: {mode}
              sandboxes: ["{PREFIX}act-*"]
              rules:
                miner.stratum: [block-flow]
                miner.pool: [deny-connect]
                miner.exec: [quarantine]
              quarantine_allow: ["127.0.0.53:53"]
        """))
        self.output = workdir / f"{mode}-{uuid.uuid4().hex[:4]}.jsonl"
        self.stderr = open(workdir / f"{mode}.stderr", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ebpfguard", "run", "--config", str(config), "--output", str(self.output),
             "--socket", "none", "--control-socket", "none", "--metrics-addr", "none"],
            stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.stderr.seek(0)
            if "ready" in self.stderr.read().splitlines():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stderr.seek(0)
        raise RuntimeError(f"agent did not start:\n{self.stderr.read()[-3000:]}")

    def wait_for(self, match: Callable[[dict], bool], timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output.exists():
                for line in self.output.read_text().splitlines():
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if match(event):
                        return event
            time.sleep(0.05)
        raise RuntimeError("no matching event")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.stderr.close()


class Cgroups:
    def __init__(self) -> None:
        root = cgroup_root_from_proc()
        if root is None:
            raise SystemExit("no cgroup2 mount")
        self.root = Path(root)
        self.made: list[Path] = []

    def make(self, name: str) -> Path:
        path = self.root / f"{PREFIX}{name}"
        path.mkdir()
        self.made.append(path)
        return path

    def popen(self, cgroup: Path, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                preexec_fn=lambda: (cgroup / "cgroup.procs").write_text("0"))

    def remove_all(self) -> None:
        for path in reversed(self.made):
            for _ in range(50):
                try:
                    (path / "cgroup.kill").write_text("1")
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def action_in(cgroup: Path, action: str) -> Callable[[dict], bool]:
    return lambda e: (e.get("kind") == "action" and e.get("action") == action
                      and (e.get("sandbox") or {}).get("name") == cgroup.name)


def time_to_effect(agent: Agent, cgroups: Cgroups, runs: int) -> dict:
    sink, pool = Sink(), Sink(reply=b"\x15\x03\x03\x00\x02\x02\x28")
    block_ms, delay_ms, deny_ms = [], [], []
    try:
        for i in range(runs):
            cg = cgroups.make(f"act-block-{i}")
            client = cgroups.popen(cg, [sys.executable, "-c", STAMPER, str(sink.port), stratum_hello(i), "2.0"])
            start = int(client.stdout.readline())
            event = agent.wait_for(action_in(cg, "block-flow"))
            client.wait(timeout=30)
            last = sink.last_stamp.get(stratum_hello(i))
            if event.get("outcome") == "done":
                delay_ms.append(event["delay_ms"])
                if last is not None:  # else no stamped line got through at all
                    block_ms.append((last - start) / 1e6)
            cg = cgroups.make(f"act-deny-{i}")
            out = cgroups.popen(cg, [sys.executable, "-c", DENIED, str(pool.port)]).communicate(timeout=30)[0]
            if out.strip():
                start, refused = map(int, out.split())
                deny_ms.append((refused - start) / 1e6)
    finally:
        sink.close()
        pool.close()
    return {"block-flow (last byte through)": block_ms, "block-flow delay_ms (event)": delay_ms,
            "deny-connect (first EPERM)": deny_ms}


def bulk_rate(cgroups: Cgroups, cgroup: Path, seconds: float) -> float:
    sink = Sink()
    try:
        out = cgroups.popen(cgroup, [sys.executable, "-c", BULK, str(sink.port), str(seconds)]).communicate(
            timeout=seconds + 30)[0]
    finally:
        sink.close()
    return float(out)


def bulk_cost(workdir: Path, cgroups: Cgroups, rounds: int, seconds: float) -> dict:
    bulk = cgroups.make("bulk")  # not matched by the agents' `sandboxes`: never acted on
    rates: dict[str, list[float]] = {}
    for r in range(rounds):
        rates.setdefault("no agent", []).append(bulk_rate(cgroups, bulk, seconds))
        off = Agent(workdir, "off")
        rates.setdefault("responses off", []).append(bulk_rate(cgroups, bulk, seconds))
        off.stop()
        agent = Agent(workdir, "enforce")
        try:
            rates.setdefault("enforce, nothing in force", []).append(bulk_rate(cgroups, bulk, seconds))
            sink = Sink()
            blocked = cgroups.make(f"act-held-{r}")
            holder = cgroups.popen(blocked, [sys.executable, "-c", STAMPER, str(sink.port),
                                             stratum_hello(1000 + r), str(4 * seconds + 20)])
            agent.wait_for(action_in(blocked, "block-flow"))
            rates.setdefault("enforce, a flow blocked elsewhere", []).append(bulk_rate(cgroups, bulk, seconds))
            quarantined = cgroups.make(f"act-quarantined-{r}")
            kworker = workdir / "kworker"  # a renamed sleep with a miner's arguments (it exits at once)
            shutil.copy("/bin/sleep", kworker)
            cgroups.popen(quarantined, [str(kworker), "-o", "stratum+tcp://pool.example.net:3333", "-u", WALLET,
                                        "--donate-level", "1"]).wait()
            agent.wait_for(action_in(quarantined, "quarantine"))
            rates.setdefault("enforce, + a sandbox quarantined elsewhere", []).append(
                bulk_rate(cgroups, bulk, seconds))
            holder.kill()
            holder.wait()
            sink.close()
        finally:
            agent.stop()
    return rates


BPF_PROG_TEST_RUN = 10


class TestRunAttr(ctypes.Structure):
    """union bpf_attr, as BPF_PROG_TEST_RUN reads it (include/uapi/linux/bpf.h)."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


def tcp_packet(payload: bytes = b"x" * 64) -> bytes:
    """An Ethernet frame with a loopback IPv4 TCP segment (test runs strip the Ethernet header)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 3333, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return b"\0" * 12 + b"\x08\x00" + ip + tcp + payload


def test_run_ns(prog_fd: int, repeat: int) -> int:
    """Mean ns per run of a loaded program over `repeat` runs on one packet."""
    packet = tcp_packet()
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    attr = TestRunAttr(prog_fd=prog_fd, data_size_in=len(packet), data_in=ctypes.addressof(data_in),
                       data_size_out=len(data_out), data_out=ctypes.addressof(data_out), repeat=repeat)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        raise OSError(ctypes.get_errno(), "BPF_PROG_TEST_RUN: " + os.strerror(ctypes.get_errno()))
    return attr.duration


def program_cost(reps: int, repeat: int = 200_000) -> dict[str, list[int]]:
    """ns per packet of the egress program in each state, states alternated `reps` times."""
    from bcc import BPF

    from ebpfguard.kernel.load import compile_flags, program_text, tracefs_root
    from ebpfguard.respond.maps import ResponseMaps

    def load(mode: str):
        config = load_config()
        config["response"]["mode"] = mode
        bpf = BPF(text=program_text(("flow",)), cflags=compile_flags(config, tracefs_root() or "/sys/kernel/tracing"))
        return bpf, bpf.load_func("cgroup_skb__egress", BPF.CGROUP_SKB).fd

    _off_bpf, off_fd = load("off")
    enforce_bpf, enforce_fd = load("enforce")
    maps = ResponseMaps(enforce_bpf)
    elsewhere = 1 << 40  # a cgroup id no packet here belongs to
    runs: dict[str, list[int]] = {}
    for _ in range(reps):
        runs.setdefault("responses off (checks compiled out)", []).append(test_run_ns(off_fd, repeat))
        runs.setdefault("enforce, nothing in force", []).append(test_run_ns(enforce_fd, repeat))
        maps.block_flow(12345, 1)
        runs.setdefault("enforce, a flow blocked", []).append(test_run_ns(enforce_fd, repeat))
        maps.quarantine(elsewhere, 1, True)
        runs.setdefault("enforce, a flow blocked and a sandbox quarantined", []).append(test_run_ns(enforce_fd, repeat))
        maps.quarantine(elsewhere, 1, False)
        maps.unblock_flow(12345)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--test-runs", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it starts agents and makes cgroups")
    workdir = Path(tempfile.mkdtemp(prefix="ebpfguard-response-bench-"))
    cgroups = Cgroups()
    load = os.getloadavg()
    try:
        agent = Agent(workdir, "enforce")
        try:
            latencies = time_to_effect(agent, cgroups, args.runs)
        finally:
            agent.stop()
        prog_ns = program_cost(args.test_runs)
        rates = bulk_cost(workdir, cgroups, args.rounds, args.seconds)
    finally:
        cgroups.remove_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"# ebpfguard responses ({os.cpu_count()} CPUs, load {load[0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end; shared host)\n")
    print("| time to effect (ms) | n | p50 | p99 | max |\n| --- | --- | --- | --- | --- |")
    for name, values in latencies.items():
        values = sorted(values)
        if values:
            print(f"| {name} | {len(values)} | {percentile(values, 50):.2f} | {percentile(values, 99):.2f} "
                  f"| {values[-1]:.2f} |")
    idle = statistics.median(prog_ns["enforce, nothing in force"])
    print("\n| egress program per packet (BPF_PROG_TEST_RUN) | ns median (min-max) | ns added to nothing in force |"
          "\n| --- | --- | --- |")
    for name, values in prog_ns.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} ({min(values)}-{max(values)}) | {median - idle:+.0f} |")
    base = statistics.median(rates["enforce, nothing in force"])
    print("\n| bulk loopback transfer | MB/s median (min-max) | ratio to enforce, nothing in force |"
          "\n| --- | --- | --- |")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median / 1e6:,.0f} ({min(values) / 1e6:,.0f}-{max(values) / 1e6:,.0f}) "
              f"| {median / base:.3f} |")


if __name__ == "__main__":
    main()
