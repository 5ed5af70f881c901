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

Names are free to change, so the tools are also recognised by their argument grammar under
any name (`GRAMMARS`: chisel's `client URL R:...`, cloudflared's and untun's `tunnel --url`,
ligolo-ng's agent `-connect HOST:PORT`, frpc's `tcp -s SERVER -l PORT`, gost's `-L rtcp://`,
inlets' `client --url wss:// --upstream`, rathole's `--client`, bore's `local N --to`,
socat's exec and network addresses, netcat's `-e SHELL HOST PORT`, inline interpreter code).
Every command an exec would run is judged: wrappers peeled off (`nohup`, `timeout`,
`sshpass`...) and each command of `sh -c` scripts, whose pipelines are also read whole for
shells wired to a network client (`mkfifo f; nc HOST PORT <f | sh >f`, `telnet ... | sh |
telnet ...`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import re2

from ebpfguard.detect.cmdline import command_list, program_name, shell_script
from ebpfguard.detect.execinfo import (
    NoFindings, basename, exec_argv, exec_key, exec_succeeded, first_positional, program_and_args,
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


ZTCP = re2.compile(r"\bztcp\s+\S+\s+\d+")
FD_VARIABLE_REDIRECT = re2.compile(r"[<>]&\s*\$\w+")


def shell_redirect(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`bash -c 'bash -i >& /dev/tcp/10.0.0.1/4242 0>&1'` and its variants; zsh's `ztcp HOST
    PORT` with a shell redirected to the descriptor it opened (`>&$REPLY`)."""
    script = " ".join(args)
    ztcp = ZTCP.search(script)
    if ztcp is not None and FD_VARIABLE_REDIRECT.search(script):
        return TunnelMatch("shell", "shell_redirect", ztcp.group(0), CRITICAL)
    target = DEV_TCP.search(script)
    if target is None or not SHELL_ON_SOCKET.search(script):
        return None
    return TunnelMatch("shell", "shell_redirect", target.group(0), CRITICAL)


INLINE_SOCKET = re2.compile(r"(?i)socket|fsockopen|TCPSocket|net\.connect|create_connection")
# How the socket reaches the shell: dup2, pty, fd redirections (`<&3`, `<&%d`), STDIN
# reopened, stream pipes, or a child process given the socket as its stdin/stdout.
INLINE_DUP = re2.compile(
    r"dup2|pty\.spawn|<&\s*(\d|%d)|>&\s*(\d|%d)|open\s*\(\s*STDIN|\.pipe\(|"
    r"std(in|out)\s*=\s*\w+|proc_open|array\(\s*0\s*=>|GetStream\("
)
# A shell, or what runs received text as commands (PowerShell's iex).
INLINE_SHELL = re2.compile(r"/bin/(ba|z|k|da)?sh\b|[\"'](ba)?sh[\"']|\bsh\s+-i\b|cmd\.exe|\biex\b|Invoke-Expression")
# Options that hand an interpreter its program inline: python -c, perl/ruby/node -e, php -r.
INLINE_CODE_OPTIONS = frozenset({"-c", "-e", "-E", "-r", "--eval", "-x"})


def inline_reverse_shell(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`python -c 'import socket,os,pty;...os.dup2(...);pty.spawn("/bin/sh")'` and kin."""
    code = " ".join(args)
    if not (INLINE_SOCKET.search(code) and INLINE_DUP.search(code)
            and INLINE_SHELL.search(code)):
        return None
    return TunnelMatch("interpreter", "inline_reverse_shell", code[:200], CRITICAL)


HELP_FLAGS = frozenset({"-h", "--help", "-help", "-V", "-v", "--version", "-version", "version", "help"})


def always_tunnel(tool: str) -> Callable[[Sequence[str]], Optional[TunnelMatch]]:
    """For programs whose every run (but help and version) exposes a service: playit,
    tunnelto, pagekite, telebit, boringproxy clients."""
    def classify(args: Sequence[str]) -> Optional[TunnelMatch]:
        if HELP_FLAGS & set(args):
            return None
        return TunnelMatch(tool, "expose_service", " ".join(args))
    return classify


def rathole(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`rathole --client client.toml` (or a config naming its client section)."""
    if "--client" in args or ("--server" not in args and any(a.endswith(".toml") for a in args)):
        return TunnelMatch("rathole", "expose_service", " ".join(args))
    return None


GOST_REVERSE = ("rtcp://", "rudp://")


def gost(args: Sequence[str]) -> Optional[TunnelMatch]:
    """gost's remote port forwards: `-L rtcp://:2222/127.0.0.1:22 -F ...` (v2 and v3)."""
    for value in _option_values(args, ("-L",)):
        if value.lower().startswith(GOST_REVERSE):
            return TunnelMatch("gost", "reverse_forward", f"-L {value}")
    return None


def inlets(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`inlets client --url wss://... --upstream ...`, `inlets-pro tcp|http client ...`."""
    if "client" not in [a for a in args if not a.startswith("-")][:2]:
        return None
    urls = _option_values(args, ("--url", "-u", "--remote"))
    if any(u.lower().startswith(("ws://", "wss://")) for u in urls) and (
            _option_values(args, ("--upstream", "--ports", "--port")) or "--upstream" in args):
        return TunnelMatch("inlets", "expose_service", " ".join(args))
    return None


def zrok(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`zrok share public|private|reserved ...`: a share of a local service."""
    words = [a for a in args if not a.startswith("-")]
    if len(words) >= 2 and words[0] == "share" and words[1] in ("public", "private", "reserved"):
        return TunnelMatch("zrok", "expose_service", " ".join(args))
    return None


def tailscale(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`tailscale funnel PORT` publishes a local port on the internet (`serve` does not)."""
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["funnel"] and not {"status", "reset", "off"} & set(words[1:]):
        return TunnelMatch("tailscale", "expose_service", " ".join(args))
    return None


def devtunnel(args: Sequence[str]) -> Optional[TunnelMatch]:
    """Microsoft dev tunnels: `devtunnel host [-p PORT]`."""
    if first_positional(args) == "host":
        return TunnelMatch("devtunnel", "expose_service", " ".join(args))
    return None


def localxpose(args: Sequence[str]) -> Optional[TunnelMatch]:
    """LocalXpose: `loclx tunnel http|tcp|tls|udp --to ...`."""
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["tunnel"] and len(words) >= 2 and words[1] in ("http", "tcp", "tls", "udp"):
        return TunnelMatch("localxpose", "expose_service", " ".join(args))
    return None


WSTUNNEL_REVERSE = ("-R", "--remote-to-local")


def wstunnel(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`wstunnel client -R tcp://2222:localhost:22 wss://server`: the server listens for us."""
    if first_positional(args) != "client":
        return None
    reverse = [v for v in _option_values(args, WSTUNNEL_REVERSE) if "://" in v]
    return TunnelMatch("wstunnel", "reverse_forward", " ".join(reverse)) if reverse else None


def iox(args: Sequence[str]) -> Optional[TunnelMatch]:
    """iox's reverse modes: `proxy -r HOST:PORT`, `fwd -r ... -r *HOST:PORT`."""
    if first_positional(args) not in ("proxy", "fwd"):
        return None
    remotes = [v for v in _option_values(args, ("-r",)) if HOST_PORT.fullmatch(v.lstrip("*"))]
    return TunnelMatch("iox", "reverse_forward", " ".join(remotes)) if remotes else None


def connect_back_agent(args: Sequence[str]) -> Optional[TunnelMatch]:
    """Agents that dial out to their operator's node with a shared secret: Stowaway's
    `-c HOST:PORT -s SECRET`, pingtunnel's `-type client -s SERVER`, nps' npc
    `-server=HOST:PORT -vkey=KEY`."""
    connect = _option_values(args, ("-c", "--connect"))
    if connect and HOST_PORT.fullmatch(connect[0]) and _option_values(args, ("-s", "--secret")):
        return TunnelMatch("stowaway", "reverse_forward", f"-c {connect[0]}")
    if _option_values(args, ("-type",))[:1] == ["client"] and _option_values(args, ("-s",)):
        return TunnelMatch("pingtunnel", "reverse_forward", " ".join(args))
    server = _option_values(args, ("-server", "--server"))
    if server and HOST_PORT.fullmatch(server[0]) and _option_values(args, ("-vkey", "--vkey")):
        return TunnelMatch("npc", "expose_service", f"-server {server[0]}")
    return None


def expose_share(args: Sequence[str]) -> Optional[TunnelMatch]:
    """beyondcode's expose: `expose share http://localhost:8000`."""
    if first_positional(args) == "share":
        return TunnelMatch("expose", "expose_service", " ".join(args))
    return None


AWK_NETWORK = re2.compile(r"/inet[46]?/(tcp|udp)/")


def awk_socket(args: Sequence[str]) -> Optional[TunnelMatch]:
    """gawk's network files with a coprocess (`s = "/inet/tcp/0/HOST/PORT"; ... |& s`):
    commands read from a socket and run."""
    program = " ".join(args)
    if AWK_NETWORK.search(program) and "|&" in program and "getline" in program:
        return TunnelMatch("awk", "inline_reverse_shell", program[:200], CRITICAL)
    return None


# Rule param (a list of program names) -> the classifier for those programs.
CLASSIFIERS: dict[str, Callable[[Sequence[str]], Optional[TunnelMatch]]] = {
    "chisel": chisel, "frpc": frpc, "ngrok": ngrok, "cloudflared": cloudflared,
    "bore": bore, "localtunnel": localtunnel, "vscode": vscode_tunnel, "socat": socat,
    "netcat": netcat, "shells": shell_redirect, "interpreters": inline_reverse_shell,
    "rathole": rathole, "gost": gost, "inlets": inlets, "zrok": zrok, "tailscale": tailscale,
    "devtunnel": devtunnel, "localxpose": localxpose, "expose_always": always_tunnel("tunnel"),
    "wstunnel": wstunnel, "iox": iox, "expose": expose_share, "awk": awk_socket,
}


# -- the same tools under any name: their argument grammar ------------------------------------

REMOTE = re2.compile(r"R:(socks|(\[[0-9a-fA-F:.]+\]:|[\w.-]+:)?\d{1,5}(:[\w.-]+:\d{1,5}|:socks)?(/(tcp|udp))?)")
HOST_PORT = re2.compile(r"(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d{1,5}")
PORT = re2.compile(r"\d{1,5}")
LIGOLO_FLAGS = frozenset({"-ignore-cert", "-accept-fingerprint", "-retry", "-proxy", "-bind", "-v"})
FRP_PROXY_TYPES = frozenset({"tcp", "udp", "http", "https", "stcp", "sudp", "xtcp", "tcpmux"})
NGROK_ONLY_FLAGS = ("--authtoken", "--region", "--domain", "--url", "--basic-auth", "--oauth",
                    "--remote-addr", "--hostname", "--subdomain", "--traffic-policy-file")
SHELL_NAMES = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "cmd.exe", "powershell", "pwsh"})


def chisel_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """chisel's client grammar: `client [opts] SERVER R:...` with a well-formed reverse remote."""
    if first_positional(args) != "client" or not any(REMOTE.fullmatch(a) for a in args):
        return None
    return chisel(args)


def cloudflared_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`tunnel --url URL`, `tunnel [opts] run --token T`, untun's `tunnel http://...`."""
    words = [a for a in args if not a.startswith("-")]
    if words[:1] != ["tunnel"] or HELP_FLAGS & set(args):
        return None
    flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    if flags & {"--url", "--token", "--hello-world"} or any(w.startswith(("http://", "https://")) for w in words[1:2]):
        return TunnelMatch("cloudflared", "expose_service", " ".join(args))
    return None


def ligolo_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """ligolo-ng's agent: `-connect HOST:PORT` (Go's single-dash flags), with its own flags or
    nothing else (`openssl s_client -connect` has a subcommand first)."""
    values = _option_values(args, ("-connect", "--connect"))
    if not values or not HOST_PORT.fullmatch(values[0]):
        return None
    flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    # Operands: words that are no flag's value (`openssl s_client -connect` has one first).
    operands = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or not args[i - 1].startswith("-"))]
    if operands and not LIGOLO_FLAGS & flags:
        return None
    tool = "ligolo-ng" if LIGOLO_FLAGS & flags else "connect-back agent"
    return TunnelMatch(tool, "reverse_forward", f"-connect {values[0]}")


def frpc_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """frpc's command-line proxies: `tcp|http|... -s SERVER[:PORT] -l LOCAL -r REMOTE`."""
    if first_positional(args) not in FRP_PROXY_TYPES:
        return None
    server = _option_values(args, ("-s", "--server_addr", "--server-addr"))
    local = _option_values(args, ("-l", "--local_port", "--local-port", "-r", "--remote_port", "--remote-port",
                                  "-d", "--custom_domain", "--sd", "--subdomain"))
    if server and local:
        return TunnelMatch("frpc", "expose_service", " ".join(args))
    return None


def bore_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`local PORT --to HOST`."""
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["local"] and len(words) >= 2 and PORT.fullmatch(words[1]) and _option_values(args, ("--to", "-t")):
        return TunnelMatch("bore", "expose_service", " ".join(args))
    return None


def ngrok_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """`http|tcp|tls PORT` with ngrok's own flags."""
    words = [a for a in args if not a.startswith("-")]
    if len(words) < 2 or words[0] not in ("http", "tcp", "tls") or not (PORT.fullmatch(words[1]) or HOST_PORT.fullmatch(words[1])):
        return None
    if not any(a.split("=", 1)[0] in NGROK_ONLY_FLAGS for a in args):
        return None
    return TunnelMatch("ngrok", "expose_service", " ".join(args))


def netcat_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """netcat's `-e|-c SHELL` with a host and port beside it."""
    match = netcat(args)
    if match is None:
        return None
    program = match.detail.split(" ", 1)[-1].strip()
    positional = [a for a in args if not a.startswith("-") and a != program]
    if program_name(program.split(" ", 1)[0]) in SHELL_NAMES and any(PORT.fullmatch(a) for a in positional):
        return match
    return None


def inline_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    """Interpreter code given inline (`-c`, `-e`, `-r`) under any interpreter name."""
    if not INLINE_CODE_OPTIONS & {a.split("=", 1)[0] for a in args if a.startswith("-")}:
        return None
    return inline_reverse_shell(args)


def rathole_grammar(args: Sequence[str]) -> Optional[TunnelMatch]:
    return rathole(args) if "--client" in args else None


GRAMMARS: tuple[Callable[[Sequence[str]], Optional[TunnelMatch]], ...] = (
    chisel_grammar, cloudflared_grammar, ligolo_grammar, frpc_grammar, gost, inlets, bore_grammar,
    ngrok_grammar, socat, netcat_grammar, inline_grammar, rathole_grammar, wstunnel, iox,
    connect_back_agent, awk_socket,
)


def _option_values(args: Sequence[str], options: Sequence[str]) -> list[str]:
    """The values of the given options, joined (`-L=v`, `--url=v`) or separate (`-L v`)."""
    values = []
    for i, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name in options:
            if equals:
                values.append(value)
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                values.append(args[i + 1])
    return values


# -- shells wired to a network client in a script's pipelines ---------------------------------

NETWORK_CLIENTS = frozenset({"nc", "ncat", "netcat", "nc.traditional", "nc.openbsd", "telnet", "openssl", "socat",
                             "cryptcat", "sbd", "pwncat"})
FIFO_MAKERS = frozenset({"mkfifo", "mknod"})
PIPELINE_SEPARATORS = re2.compile(r";|&&|\|\||\n|&")


def shell_pipeline(script: str) -> Optional[TunnelMatch]:
    """A pipeline joining a shell and a network client (`telnet H P | sh | telnet H P2`,
    `cat f | sh -i | nc H P > f`), or a FIFO made in the same script and a network client
    that reads or feeds a shell through it (`mkfifo f; nc H P <f | sh >f`)."""
    script = script[:65536]
    fifo = False
    # Redirections (`2>&1`, `<&3`, `&>f`) hold `&` and `|&` pipes stderr too: neither ends a pipeline.
    script = script.replace("|&", "|").replace(">&", ">").replace("<&", "<").replace("&>", ">")
    for pipeline in PIPELINE_SEPARATORS.split(script):
        stages = [stage.split() for stage in pipeline.split("|")]
        names = [_stage_program(stage) for stage in stages if stage]
        fifo = fifo or bool(FIFO_MAKERS & set(names))
        clients = [name for name in names if name in NETWORK_CLIENTS]
        shells = [name for name in names if name in SHELL_NAMES]
        if clients and shells and len(names) >= 2:
            return TunnelMatch("shell", "shell_pipeline", pipeline.strip()[:200], CRITICAL)
        if fifo and clients and ("<" in pipeline or ">" in pipeline) and shells:
            return TunnelMatch("shell", "shell_pipeline", pipeline.strip()[:200], CRITICAL)
    return None


def _stage_program(words: list[str]) -> str:
    """The program a pipeline stage runs: redirections and `busybox` skipped."""
    for index, word in enumerate(words):
        if word[:1] in "<>" or word[:2] in ("2>", "1>", "0<"):
            continue
        name = program_name(word)
        if name == "busybox" and index + 1 < len(words):
            return program_name(words[index + 1])
        return name
    return ""


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
        # Hosts run the same few command lines over and over; each is judged once (a dozen
        # grammars). Bounded: an argv is at most ARGV_BUF_LEN bytes.
        self._classified = functools.lru_cache(maxsize=512)(
            lambda name, args: self.classify(name, list(args)))
        self._quiet = NoFindings()

    def on_event(self, event: Event) -> Iterable[Finding]:
        if not exec_succeeded(event):
            return []
        return self._quiet.findings(exec_key(event), lambda: self._findings(event))

    def _findings(self, event: Event) -> list[Finding]:
        name, args = program_and_args(event)
        match = self._classified(name, tuple(args))
        if match is None:
            # The same, for each command the exec would run (wrappers, `sh -c` scripts).
            argv = exec_argv(event)
            for command in command_list(argv)[:16]:
                if list(command.argv) == argv:
                    continue  # the exec itself, judged above
                match = self._classified(program_name(command.argv[0]), command.argv[1:])
                if match is not None:
                    name = program_name(command.argv[0])
                    break
        if match is None:
            return []
        return [Finding(
            summary=f"{name}: {match.technique.replace('_', ' ')} ({match.detail[:120]})",
            evidence={"tool": match.tool, "program": name, "technique": match.technique,
                      "detail": match.detail},
            severity=match.severity,
        )]

    def classify(self, name: str, args: list[str]) -> Optional[TunnelMatch]:
        """The tunnel one command is: by its name's classifier, then by grammar, then (for a
        shell script) by its pipelines."""
        grammar_args = args
        if name in self.runners:
            name, args = self.unwrap_runner(name, args)
            script = first_positional(args)
            # A script the runner starts takes the arguments after it, whatever it is called.
            grammar_args = args[args.index(script) + 1:] if name in self.runners and script else args
        classify = self.classifier_of.get(name) or self.classifier_of.get(program_key(name))
        match = classify(args) if classify else None
        if match is None:
            match = next((m for m in (grammar(grammar_args) for grammar in GRAMMARS) if m is not None), None)
        if match is None:
            script = shell_script([name, *args])
            if script is not None:
                match = shell_pipeline(script)
        return match

    def unwrap_runner(self, name: str, args: list[str]) -> tuple[str, list[str]]:
        """`npx localtunnel --port 80`, `node .../bin/lt.js --port 80` -> the tool's argv."""
        script = first_positional(args)
        if script is None:
            return name, args
        tool = basename(script).removesuffix(".js").split("@", 1)[0]  # `untun@latest`
        if tool not in self.classifier_of:
            return name, args
        return tool, args[args.index(script) + 1:]
