"""Responses in the kernel: real sandbox cgroups, real flows on loopback, one enforcing agent
for most tests (it runs in a `sandbox-*` cgroup of its own, so that a rule firing there shows
it never acts on itself), a second for a restart, a dry-run one.

Triggers: a stratum hello (miner.stratum -> block-flow), a TLS ClientHello naming a pool
(miner.pool -> deny-connect), miner-like arguments (miner.exec -> quarantine), a chisel
reverse remote (tunnel.other -> freeze), an `ssh -R` (tunnel.ssh_remote_forward -> kill).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import pytest
from conftest import RunningAgent, alert_for, miner_command_line
from test_dns_and_sni import TLS_CLIENT
from test_flow_events import EchoServer

from ebpfguard.kernel.links import attached_program_ids

# BPF attach types (include/uapi/linux/bpf.h) our cgroup programs use.
ATTACH_TYPES = {"ingress": 0, "egress": 1, "sock_create": 2, "connect4": 10, "connect6": 11}

STREAMER = textwrap.dedent("""
    import os, socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
    print(os.getpid(), flush=True)
    s.setblocking(False)
    i = 0
    while True:
        try:
            s.send(b"tick %d\\n" % i)
        except BlockingIOError:
            pass
        i += 1
        time.sleep(0.02)
""")

CONNECT = textwrap.dedent("""
    import errno, socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[3] == "udp" else socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        if sys.argv[3] == "udp":
            s.send(b"query")
            s.recv(64)
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, "timeout"))
    else:
        print("ok")
""")

# Counts up in a file, replaced whole each time (a reader never sees it half written).
COUNTER = textwrap.dedent("""
    import os, sys, time
    n = 0
    while True:
        n += 1
        with open(sys.argv[1] + ".new", "w") as f:
            f.write(str(n))
        os.replace(sys.argv[1] + ".new", sys.argv[1])
        time.sleep(0.02)
""")

TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"  # what a non-TLS pool stand-in answers a ClientHello with
# Other tests (and other agents) make `sandbox-*` cgroups on this host at the same time: the
# agents here act only on this module's sandboxes, which all carry this prefix.
PREFIX = f"sandbox-resp{uuid.uuid4().hex[:6]}-"
STRATUM_HELLO = '{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\\n'


class CountingServer:
    """A TCP listener on loopback that counts the bytes of each connection, by its first line."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received: dict[str, int] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._count, args=(conn,), daemon=True).start()

    def _count(self, conn: socket.socket) -> None:
        first = None
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if first is None:
                    first = data.split(b"\n")[0].decode(errors="replace")
                with self.lock:
                    self.received[first] = self.received.get(first, 0) + len(data)

    def bytes_from(self, first_line_part: str) -> int:
        with self.lock:
            return sum(n for first, n in self.received.items() if first_line_part in first)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class UdpResolver:
    """Answers every datagram (a stand-in for the sandbox's resolver)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
                self.sock.sendto(b"answer", peer)
            except OSError:
                return


def grows(measure, seconds: float = 1.0) -> bool:
    before = measure()
    time.sleep(seconds)
    return measure() > before


def connect_from(cg, port: int, proto: str = "tcp", host: str = "127.0.0.1") -> str:
    out = cg.run([sys.executable, "-c", CONNECT, host, str(port), proto], capture_output=True, text=True,
                 check=True, timeout=20)
    return out.stdout.strip()


def action_for(rule: str, sandbox: str, action: str):
    return lambda e: (e["kind"] == "action" and e["rule"] == rule and e["action"] == action
                      and (e.get("sandbox") or {}).get("name") == sandbox)


def response_config(tmp_path: Path, mode: str, resolver_port: int) -> Path:
    path = tmp_path / "response.yaml"
    path.write_text(textwrap.dedent(f"""
        response:
          mode: {mode}
          sandboxes: ["{PREFIX}*"]
          rules:
            miner.stratum: [block-flow]
            miner.pool: [deny-connect]
            miner.exec: [quarantine]
            tunnel.other: [freeze]
            tunnel.ssh_remote_forward: [kill]
          deny_ttl_s: 600
          quarantine_allow: ["127.0.0.1:{resolver_port}"]
    """))
    return path


def our_program_ids(pid: int) -> set[int]:
    """The BPF programs a process holds (its prog and link fds name them in fdinfo)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def attached_anywhere(cgroup_root: Path) -> set[int]:
    return {i for t in ATTACH_TYPES.values() for i in attached_program_ids(str(cgroup_root), t)}


class Agent(RunningAgent):
    """A RunningAgent with its control socket, started in `cgroup` when given."""

    def __init__(self, workdir: Path, config: Path, cgroup: Optional[Path] = None) -> None:
        self.control = str(workdir / "control.sock")
        wrapper: tuple[str, ...] = ()
        if cgroup is not None:
            wrapper = ("sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh")
        super().__init__(workdir, ("--config", str(config), "--control-socket", self.control), wrapper=wrapper)

    def wait_for(self, match, timeout: float = 30):
        """As RunningAgent's, with room for a loaded host: an action comes after its alert."""
        return super().wait_for(match, timeout)

    def actions(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ebpfguard", "actions", "--control-socket", self.control, *args],
                              capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def resolver():
    return UdpResolver()


@pytest.fixture(scope="module")
def agent_cgroup(cgroup_root):
    cg = cgroup_root / f"{PREFIX}ebpfguard-agent"
    cg.mkdir()
    yield cg
    for _ in range(100):
        try:
            cg.rmdir()
            return
        except OSError:
            time.sleep(0.1)


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory, resolver, agent_cgroup):
    config = response_config(tmp_path_factory.mktemp("config"), "enforce", resolver.port)
    running = Agent(tmp_path_factory.mktemp("respond"), config, agent_cgroup)
    yield running
    running.stop()


@pytest.fixture
def server():
    srv = CountingServer()
    yield srv
    srv.close()


@pytest.fixture
def pool():
    """A loopback listener that answers a TLS ClientHello with a TLS alert."""
    srv = EchoServer(reply=TLS_ALERT)
    yield srv
    srv.close()


def hello_to_pool(cg, port: int) -> None:
    cg.run([sys.executable, "-c", TLS_CLIENT, "gulf.moneroocean.stream", str(port)],
           capture_output=True, check=True, timeout=20)


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stream(cg, port: int, first: str, processes) -> subprocess.Popen:
    proc = cg.popen([sys.executable, "-c", STREAMER, str(port), first], stdout=subprocess.PIPE, text=True)
    processes.append(proc)
    proc.stdout.readline()  # connected and the first line sent
    return proc


def test_dry_run_changes_nothing_and_writes_the_would_be_action(tmp_path, make_cgroup, server, processes, resolver):
    # First in the module: the enforcing agent of the other tests is not started yet.
    dry = Agent(tmp_path, response_config(tmp_path, "dry-run", resolver.port))
    try:
        miner = make_cgroup(PREFIX)
        stream(miner, server.port, STRATUM_HELLO, processes)
        action = dry.wait_for(action_for("miner.stratum", miner.path.name, "block-flow"))
        assert action["outcome"] == "dry-run" and action["mode"] == "dry-run"
        assert action["target"]["flow_id"] > 0
        assert grows(lambda: server.bytes_from("mining.subscribe"))
        chisel_in(miner, tmp_path, processes)
        frozen = dry.wait_for(action_for("tunnel.other", miner.path.name, "freeze"))
        assert frozen["outcome"] == "dry-run"
        assert "frozen 0" in (miner.path / "cgroup.events").read_text()
        assert json.loads(dry.actions("--json").stdout)["in_force"] == []
    finally:
        assert dry.stop() == 0


def test_block_flow_stops_the_pool_flow_and_not_another_sandbox_flow_on_the_same_port(
        enforcing, make_cgroup, server, processes):
    miner, neighbour = make_cgroup(PREFIX), make_cgroup(PREFIX)
    stream(neighbour, server.port, "ping from the neighbour\\n", processes)
    stream(miner, server.port, STRATUM_HELLO, processes)
    action = enforcing.wait_for(action_for("miner.stratum", miner.path.name, "block-flow"))
    assert action["outcome"] == "done", action
    assert action["target"]["dport"] == server.port and action["ids"]
    # The action line is written once the block is in force; a tick sent just before it may
    # still be on its way to the server's reading thread on a busy host.
    time.sleep(0.2)
    at_action = server.bytes_from("mining.subscribe")
    assert not grows(lambda: server.bytes_from("mining.subscribe")), "the pool got bytes after the action"
    assert server.bytes_from("mining.subscribe") == at_action
    assert grows(lambda: server.bytes_from("neighbour")), "the other sandbox's flow stopped too"
    alert = enforcing.wait_for(alert_for("miner.stratum", lambda e: e["sandbox"]["name"] == miner.path.name))
    assert action["alert"]["time"] == alert["time"] and action["delay_ms"] >= 0


def test_deny_connect_refuses_the_next_connect_with_eperm_and_not_other_sandboxes(
        enforcing, make_cgroup, pool):
    server = pool
    miner, other = make_cgroup(PREFIX), make_cgroup(PREFIX)
    hello_to_pool(miner, server.port)
    action = enforcing.wait_for(action_for("miner.pool", miner.path.name, "deny-connect"))
    assert action["outcome"] == "done", action
    assert {"daddr": "127.0.0.1", "dport": server.port} in action["target"]["destinations"]
    assert connect_from(miner, server.port) == "EPERM"
    assert connect_from(other, server.port) == "ok"
    listed = json.loads(enforcing.actions("--json").stdout)["in_force"]
    entry = next(e for e in listed if e["id"] in action["ids"])
    assert entry["action"] == "deny-connect" and 0 < entry["expires_in_s"] <= 600
    assert enforcing.actions("lift", entry["id"]).returncode == 0
    assert connect_from(miner, server.port) == "ok"


def test_quarantine_stops_open_flows_and_new_connects_but_allows_the_resolver(
        enforcing, make_cgroup, server, resolver, processes, tmp_path):
    cg = make_cgroup(PREFIX)
    stream(cg, server.port, "plain traffic\\n", processes)
    assert grows(lambda: server.bytes_from("plain traffic"))
    assert connect_from(cg, resolver.port, "udp") == "ok"
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    cg.run(["sh", "-c", miner_command_line(kworker)])
    action = enforcing.wait_for(action_for("miner.exec", cg.path.name, "quarantine"))
    assert action["outcome"] == "done", action
    assert not grows(lambda: server.bytes_from("plain traffic")), "the open flow still sends"
    assert connect_from(cg, server.port) == "EPERM"
    assert connect_from(cg, resolver.port, "udp") == "ok"
    assert connect_from(make_cgroup(PREFIX), server.port) == "ok"
    enforcing.actions("lift", *action["ids"])
    assert connect_from(cg, server.port) == "ok"


def chisel_in(cg, tmp_path: Path, processes) -> None:
    """A chisel reverse remote (a renamed sleep that exits at once), not waited for: the
    freeze it sets off may catch it before it exits."""
    chisel = tmp_path / "chisel"
    if not chisel.exists():
        shutil.copy("/bin/sleep", chisel)
    processes.append(cg.popen([str(chisel), "client", "127.0.0.1:9", "R:2222:127.0.0.1:22"],
                              stderr=subprocess.DEVNULL))


def counter_in(cg, tmp_path: Path, processes) -> Path:
    count = tmp_path / f"count-{uuid.uuid4().hex[:6]}"
    processes.append(cg.popen([sys.executable, "-c", COUNTER, str(count)]))
    deadline = time.monotonic() + 10
    while not count.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def read_count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def test_freeze_leaves_every_process_frozen_and_thaw_resumes_them(enforcing, make_cgroup, tmp_path, processes):
    cg = make_cgroup(PREFIX)
    counts = [counter_in(cg, tmp_path, processes), counter_in(cg.child("inner"), tmp_path, processes)]
    chisel_in(cg, tmp_path, processes)
    action = enforcing.wait_for(action_for("tunnel.other", cg.path.name, "freeze"))
    assert action["outcome"] == "done", action
    assert "frozen 1" in (cg.path / "cgroup.events").read_text()
    for pid in (cg.path / "cgroup.procs").read_text().split() + (cg.path / "inner/cgroup.procs").read_text().split():
        assert Path(f"/proc/{pid}/status").exists()
    for count in counts:
        assert not grows(lambda: read_count(count)), "a process of the frozen sandbox still runs"
    listed = enforcing.actions().stdout
    assert cg.path.name in listed and "freeze" in listed
    thawed = subprocess.run([sys.executable, "-m", "ebpfguard", "thaw", cg.path.name], capture_output=True,
                            text=True, timeout=30)
    assert thawed.returncode == 0, thawed.stderr
    for count in counts:
        assert grows(lambda: read_count(count))


def test_kill_ends_the_offending_process_by_pidfd(enforcing, make_cgroup, tmp_path, processes):
    ssh = tmp_path / "ssh"
    ssh.write_text("#!/bin/sh\nexec sleep 60\n")
    ssh.chmod(0o755)
    cg = make_cgroup(PREFIX)
    proc = cg.popen([str(ssh), "-N", "-R", "8022:127.0.0.1:22", "tunnel@example.invalid"])
    processes.append(proc)
    action = enforcing.wait_for(action_for("tunnel.ssh_remote_forward", cg.path.name, "kill"))
    assert action["outcome"] == "done", action
    assert action["target"]["pid"] == proc.pid
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_the_agents_own_cgroup_and_host_are_never_acted_on(enforcing, agent_cgroup, tmp_path):
    chisel = tmp_path / "chisel"
    shutil.copy("/bin/sleep", chisel)
    argv = [str(chisel), "client", "127.0.0.1:9", "R:2222:127.0.0.1:22"]
    subprocess.run(argv, preexec_fn=lambda: (agent_cgroup / "cgroup.procs").write_text("0"), capture_output=True)
    own = enforcing.wait_for(action_for("tunnel.other", agent_cgroup.name, "freeze"))
    assert own["outcome"] == "refused" and "agent" in own["reason"]
    assert "frozen 0" in (agent_cgroup / "cgroup.events").read_text()
    host_pid = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    host_pid.wait()
    host = enforcing.wait_for(lambda e: e["kind"] == "action" and e["rule"] == "tunnel.other"
                              and (e.get("process") or {}).get("pid") == host_pid.pid
                              and (e.get("process") or {}).get("argv", [None])[0] == str(chisel))
    assert host["outcome"] in ("refused", "skipped"), host
    if host["sandbox"]["name"] == "host":  # lineage may tie a reused pid to a sandbox gone since
        assert host["outcome"] == "refused" and "host" in host["reason"], host
    assert enforcing.proc.poll() is None


def test_sigkill_of_the_agent_leaves_none_of_its_programs_and_the_blocked_destination_reachable(
        enforcing, make_cgroup, pool, cgroup_root, tmp_path, processes):
    server = pool
    miner = make_cgroup(PREFIX)
    hello_to_pool(miner, server.port)
    enforcing.wait_for(action_for("miner.pool", miner.path.name, "deny-connect"))
    assert connect_from(miner, server.port) == "EPERM"
    frozen = make_cgroup(PREFIX + "frozen-")
    counter_in(frozen, tmp_path, processes)
    chisel_in(frozen, tmp_path, processes)
    enforcing.wait_for(action_for("tunnel.other", frozen.path.name, "freeze"))
    ours = our_program_ids(enforcing.proc.pid)
    assert ours & attached_anywhere(cgroup_root), "the agent's programs were not attached"
    enforcing.proc.send_signal(signal.SIGKILL)
    enforcing.proc.wait()
    deadline = time.monotonic() + 10
    while ours & attached_anywhere(cgroup_root) and time.monotonic() < deadline:
        time.sleep(0.1)  # links are released as the dead process's files are closed
    assert not ours & attached_anywhere(cgroup_root)
    assert connect_from(miner, server.port) == "ok"
    # A frozen sandbox stays frozen: the next agent lists it, and thaws it when told to.
    restarted = Agent(tmp_path, response_config(tmp_path, "enforce", 9))
    try:
        listed = json.loads(restarted.actions("--json").stdout)["in_force"]
        entry = next(e for e in listed if e["sandbox"] == frozen.path.name)
        assert entry["action"] == "freeze" and entry["frozen"] is True
        assert restarted.actions("lift", entry["id"]).returncode == 0
        assert "frozen 0" in (frozen.path / "cgroup.events").read_text()
        hello_to_pool(miner, server.port)
        restarted.wait_for(action_for("miner.pool", miner.path.name, "deny-connect"))
        assert connect_from(miner, server.port) == "EPERM"
        ours = our_program_ids(restarted.proc.pid)
    finally:
        assert restarted.stop() == 0, restarted.stderr[-4000:]
    assert not ours & attached_anywhere(cgroup_root)
    assert connect_from(miner, server.port) == "ok"


def test_kill_sandbox_ends_every_process_even_frozen_ones_without_an_agent(make_cgroup):
    cg = make_cgroup(PREFIX + "kill-")
    sleepers = [cg.popen(["sleep", "60"]), cg.child("inner").popen(["sleep", "60"])]
    (cg.path / "cgroup.freeze").write_text("1")
    killed = subprocess.run([sys.executable, "-m", "ebpfguard", "kill", cg.path.name], capture_output=True,
                            text=True, timeout=30)
    assert killed.returncode == 0, killed.stderr
    assert [p.wait(timeout=10) for p in sleepers] == [-signal.SIGKILL, -signal.SIGKILL]
    missing = subprocess.run([sys.executable, "-m", "ebpfguard", "thaw", PREFIX + "no-such-sandbox"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "no sandbox named" in missing.stderr
