"""`tunnel.ssh_remote_forward`: an ssh client asked to open a remote (reverse) forward.

A remote forward makes the server listen and tunnel what arrives back into the sandbox: the
way out through a firewall that the incident's agent used. We read the client's argv as the
client does (`ssh_command`), and in the live agent its configuration files (`ssh_config`).

When to alert. At the exec, always: the forward is requested before the first packet leaves,
and waiting for a connect would let a tunnel that connects through a ProxyCommand or
ProxyJump (the connect is made by a child process) go unreported. The exec alert names the
destination as the command line does (`host`, `port`).

Then, so the alert can carry where the tunnel really goes, the detector remembers the pids it
flagged (bounded LRU; forgotten on the pid's next exec or its exit) and, on the first connect
of that pid to an IP address that is not DNS, emits one more finding: the same evidence plus
`destination: {daddr, dport}`. So a process gives one alert at exec and at most one
connect-enriched alert, told apart by the `destination` key. Events without a pid (minimal
replay input) get only the exec alert.

Not tunnels: sshd's own re-exec (`sshd -R`) and scp/sftp/rsync `-R`, `-R` inside the remote
command, `ssh -V/-G/-Q`, `-O` mux commands other than `forward`, and `ClearAllForwardings
yes`, which drops every forward.

Under any name. A copy of `ssh` called `updater` is still OpenSSH: a program not listed is
read with OpenSSH's grammar, and counts as an ssh client when that reading gives a
destination and remote forwards that only ssh writes (`-R [bind:]PORT:HOST:PORT`,
`-R PORT:/socket`, `-o RemoteForward`), so `chmod -R 755 dir` and `chown -R 1000:1000 d` are
not. Wrapped commands (`sshpass -p X ssh -R ...`, `timeout`, `nohup`) and the commands of
`sh -c` scripts are parsed as if they ran themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Optional

import re2

from ebpfguard.detect.addresses import parse_address
from ebpfguard.detect.cmdline import WRAPPERS, command_list, program_name
from ebpfguard.detect.execinfo import NoFindings, event_pid, exec_argv, exec_key, exec_succeeded, program_and_args
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector
from ebpfguard.detect.ssh_command import SshCommand, parse_ssh_command
from ebpfguard.detect.ssh_config import ConfigRead, home_directory, read_remote_forwards

# Rule params naming, per dialect, the list of program names parsed with that dialect.
DIALECT_PARAMS = {"openssh": "openssh_clients", "autossh": "autossh_clients",
                  "dropbear": "dropbear_clients", "plink": "plink_clients"}
DNS_PORT = 53
# Programs whose own -R means something else, never read as ssh.
NOT_SSH = frozenset({"sshd", "scp", "sftp", "rsync", "ssh-keygen", "ssh-add", "ssh-keyscan", "ssh-copy-id",
                     "cp", "chmod", "chown", "chgrp", "grep", "egrep", "rg", "ls", "rm", "mv", "ln", "diff",
                     "setfacl", "getfacl", "zip", "unzip", "tar", "find", "du", "touch"})
# `[bind:]PORT:HOST:PORT` or `[bind:]PORT:/socket`: the forwards only an ssh command line writes.
SSH_FORWARD = re2.compile(r"((\[[0-9a-fA-F:.]+\]|[\w.*-]+):)?\d{1,5}:((\[[0-9a-fA-F:.]+\]|[\w.-]+):\d{1,5}|/\S+)")


@detector("tunnel.ssh_remote_forward", kinds=("exec", "connect", "exit"))
class SshRemoteForward(Detector):
    """Remote forwards requested by ssh, autossh, dbclient and plink."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        self.dialect_of = {name: dialect for dialect, key in DIALECT_PARAMS.items()
                           for name in ctx.params.get(key, ())}
        self.capacity = int(ctx.params.get("max_tracked_processes", 4096))
        # pid -> (exec evidence, expected ssh port or None)
        self.flagged: OrderedDict[int, tuple[dict, Optional[int]]] = OrderedDict()
        self._no_ssh = NoFindings()
        self._found: Optional[tuple[Event, Optional[tuple[str, str, SshCommand, bool]]]] = None

    def on_event(self, event: Event) -> Iterable[Finding]:
        kind = event.get("kind")
        if kind == "exec":
            return self.on_exec(event)
        if kind == "connect":
            return self.on_connect(event)
        pid = event_pid(event)
        if pid is not None:
            self.flagged.pop(pid, None)
        return ()

    def on_exec(self, event: Event) -> list[Finding]:
        if not exec_succeeded(event):
            return []
        pid = event_pid(event)
        if pid is not None:
            self.flagged.pop(pid, None)  # a new image in this pid: the old one is gone
        found = self._ssh_command(event)
        if found is None:
            return []
        name, dialect, command, own = found
        forwards = list(command.remote_forwards)
        evidence: dict = {"client": dialect, "program": name, "host": command.destination,
                          "port": command.port}
        if self.ctx.read_file is not None:
            config = self.read_config(event, command)
            if config.clear_all_forwardings:
                return []
            forwards += config.forwards
            evidence["config"] = config.as_evidence()
        if not forwards:
            return []
        evidence["forwards"] = [f.as_evidence() for f in forwards]
        # autossh never connects to the server itself: the ssh it starts does (and is
        # flagged on its own exec).
        if pid is not None and dialect != "autossh" and own:
            self.remember(pid, evidence, command.port)
        return [Finding(summary=f"{name} opens a remote forward {forwards[0].text!r} "
                                f"through {command.destination}", evidence=evidence)]

    def may_read_files(self, event: Event) -> bool:
        """Whether this exec runs an ssh client whose config files would be read (live only)."""
        return (self.ctx.read_file is not None and event.get("kind") == "exec" and exec_succeeded(event)
                and self._ssh_command(event) is not None)

    def _ssh_command(self, event: Event) -> Optional[tuple[str, str, SshCommand, bool]]:
        """ssh_command_of, unless the command line was found to run none before; remembered
        for the last event, which may_read_files and on_exec both ask about."""
        if self._found is not None and self._found[0] is event:
            return self._found[1]
        key = exec_key(event)
        found = None if key in self._no_ssh else self.ssh_command_of(event)
        if found is None:
            self._no_ssh.add(key)  # no ssh client in it: a function of the command line alone
        self._found = (event, found)
        return found

    def ssh_command_of(self, event: Event) -> Optional[tuple[str, str, SshCommand, bool]]:
        """(program, dialect, parsed command, whether the exec itself is the client) for the
        first ssh client the exec runs: itself, a wrapped command, a `sh -c` command."""
        name, args = program_and_args(event)
        candidates = [(name, args, True)]
        candidates += [(program_name(c.argv[0]), list(c.argv[1:]), False)
                       for c in command_list(exec_argv(event))[:16]]
        for index, (program, arguments, own) in enumerate(candidates):
            if index == 1 and candidates[0][0] == program and not own:
                continue  # the unwrapped exec itself, read already
            dialect = self.dialect_of.get(program)
            if dialect is not None:
                command = parse_ssh_command(dialect, arguments)
                if command.connects and (command.remote_forwards or self.ctx.read_file is not None):
                    return program, dialect, command, own
            # Wrappers are read unwrapped, as the commands after the first.
            elif program not in NOT_SSH and program not in WRAPPERS and _may_forward(arguments):
                command = parse_ssh_command("openssh", arguments)
                if command.connects and is_ssh_shaped(command):
                    return program, "openssh", command, own
        return None

    def read_config(self, event: Event, command: SshCommand) -> ConfigRead:
        """The forwards the command's config files add; home from the process's passwd."""
        read_file = self.ctx.read_file
        assert read_file is not None
        uid = (event.get("process") or {}).get("uid")
        home = home_directory(read_file(event, "/etc/passwd").data, uid)
        return read_remote_forwards(command, lambda path: read_file(event, path), home)

    def remember(self, pid: int, evidence: dict, port: Optional[int]) -> None:
        self.flagged[pid] = (evidence, port)
        self.flagged.move_to_end(pid)
        while len(self.flagged) > self.capacity:
            self.flagged.popitem(last=False)

    def on_connect(self, event: Event) -> list[Finding]:
        pid = event_pid(event)
        if pid is None or pid not in self.flagged:
            return []
        evidence, port = self.flagged[pid]
        daddr, dport = parse_address(event.get("daddr")), event.get("dport")
        # The resolver's query (a connected UDP socket to port 53) and unix sockets (the ssh
        # agent) come before the connect to the server; with a known port, wait for it.
        if daddr is None or dport == DNS_PORT or (port is not None and dport != port):
            return []
        del self.flagged[pid]
        destination = {"daddr": str(daddr), "dport": dport}
        return [Finding(summary=f"{evidence['program']} remote forward connected to "
                                f"{daddr} port {dport}",
                        evidence={**evidence, "destination": destination})]


def _may_forward(arguments: list[str]) -> bool:
    """Whether OpenSSH's grammar could find a remote forward here: only the option letters
    `R` and `o` (RemoteForward) make one, and getopt reads letters only in words that start
    with `-`. Most command lines have neither, and skip the parse."""
    return any(arg[:1] == "-" and ("R" in arg or "o" in arg) for arg in arguments)


def is_ssh_shaped(command: SshCommand) -> bool:
    """Whether a command line read with OpenSSH's grammar is one only ssh would take: a
    destination that names a host, and every forward written as ssh writes them."""
    destination = command.destination or ""
    if not destination or destination.startswith(("/", ".", "-")) or not command.remote_forwards:
        return False
    return all(spec.source != "-R" or SSH_FORWARD.fullmatch(spec.text.strip())
               for spec in command.remote_forwards)
