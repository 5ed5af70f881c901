"""Read an ssh client's argv the way the client itself does, down to its remote forwards.

OpenSSH (ssh.c) parses with BSD getopt, which stops at the first non-option: that argument is
the destination. If arguments follow and option parsing was not ended by `--`, ssh resets
getopt and parses again from the argument after the destination (`goto again`), so
`ssh host -R 8080:localhost:80` forwards. The second stop is where the remote command begins;
everything from there on is sent to the server as text, so a `-R` inside it is not a forward.
The option table below is ssh.c's getopt string:

    "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"

Letters ssh does not know make it print usage and exit; we read them as flags anyway so a
newer client's new flag cannot hide a forward from us.

dropbear's `dbclient` follows the same shape with its own table; PuTTY's `plink` takes
whole-word options (`-pw`, `-R`), the host, then the command; `autossh` takes `-M port` and
hands everything else to ssh.
"""

from __future__ import annotations

import functools

import re
import shlex
from dataclasses import dataclass, field
from typing import Optional, Sequence

OPENSSH_WITH_VALUE = frozenset("bceilmopBDEFIJLOPQRSWw")
# autossh's getopt string is ssh's plus `M:` (monitor port) and `V`.
AUTOSSH_WITH_VALUE = OPENSSH_WITH_VALUE | {"M"}
# dbclient(1) and cli-runopts.c: -i -L -R -l -p -K -I -J -c -m -b -o -W -B take a value.
DROPBEAR_WITH_VALUE = frozenset("iLRlpKIJcmboWB")
PLINK_WITH_VALUE = frozenset(
    {"-P", "-l", "-pw", "-pwfile", "-L", "-R", "-D", "-m", "-i", "-hostkey", "-load",
     "-sercfg", "-sshlog", "-sshrawlog", "-proxycmd", "-nc", "-loghost", "-cert", "-J"}
)

# Flags that make the client print something and exit before it connects: -V (version),
# and for OpenSSH -G (print the configuration) and -Q (list algorithms).
EXIT_EARLY = {"openssh": frozenset("VGQ"), "autossh": frozenset("VGQ"),
              "dropbear": frozenset("Vh")}
# -O commands that leave forwards in place: only `forward` asks the master to add them.
MUX_COMMAND_ADDING_FORWARDS = "forward"


@dataclass(frozen=True)
class RemoteForwardSpec:
    """One remote forward: the server listens on `listen` and tunnels what arrives back to us.

    `target` is where the client delivers it (`host:port` or a socket path); None for a remote
    dynamic forward (`-R 1080`), where the client acts as a SOCKS proxy for the server side.
    """

    text: str
    listen: str
    target: Optional[str]
    source: str  # where it was written: "-R", "-o RemoteForward", or "<config file>:<line>"

    @property
    def dynamic(self) -> bool:
        return self.target is None

    def as_evidence(self) -> dict:
        return {"listen": self.listen, "target": self.target, "dynamic": self.dynamic,
                "source": self.source, "text": self.text}


@dataclass(frozen=True)
class SshCommand:
    """An ssh client command line, parsed."""

    client: str  # openssh, autossh, dropbear, plink
    destination: Optional[str]  # as written: [user@]host, ssh://..., host/port
    remote_forwards: tuple[RemoteForwardSpec, ...] = ()
    remote_command: tuple[str, ...] = ()
    config_file: Optional[str] = None  # -F
    port: Optional[int] = None  # -p, -o Port, ssh://host:port, host/port
    exits_early: bool = False  # -V, -G, -Q: prints and exits without connecting
    mux_command: Optional[str] = None  # -O
    clear_all_forwardings: bool = False  # -o ClearAllForwardings=yes

    @property
    def host(self) -> Optional[str]:
        """The host part of the destination, as `Host` lines in ssh_config match it."""
        return destination_host(self.destination) if self.destination else None

    @property
    def opens_remote_forwards(self) -> bool:
        """Whether running this command sets up its remote forwards (config aside)."""
        return bool(self.remote_forwards) and self.connects

    @property
    def connects(self) -> bool:
        """Whether this command connects and keeps the forwards it is given."""
        if self.destination is None or self.exits_early or self.clear_all_forwardings:
            return False
        return self.mux_command in (None, MUX_COMMAND_ADDING_FORWARDS)


def destination_host(destination: str) -> str:
    """`user@host`, `ssh://user@host:2222`, `host/22` (dropbear) -> `host`."""
    rest = destination
    if rest.lower().startswith("ssh://"):
        rest = rest[len("ssh://"):].split("/", 1)[0]
        rest = rest.rsplit("@", 1)[-1]
        if rest.startswith("["):
            return rest[1:].split("]", 1)[0]
        return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest
    rest = rest.rsplit("@", 1)[-1]
    return rest.split("/", 1)[0].split("%", 1)[0]


def _split_forward_fields(text: str) -> list[str]:
    """Split a forward spec on `:`, keeping `[v6:addr]` whole (OpenSSH's hpdelim)."""
    fields, current, bracket = [], "", False
    for ch in text:
        if ch == "[":
            bracket = True
        elif ch == "]":
            bracket = False
        if ch == ":" and not bracket:
            fields.append(current)
            current = ""
        else:
            current += ch
    fields.append(current)
    return fields


def parse_remote_forward(text: str, source: str) -> RemoteForwardSpec:
    """Parse a `-R` argument the way OpenSSH's parse_forward reads a remote forward.

    Shapes: `port` and `bind:port` (remote dynamic), `[bind:]port:host:hostport`,
    `/remote.sock:host:port`, `port:/local.sock`, `/remote.sock:/local.sock`.
    """
    fields = _split_forward_fields(text.strip())

    def is_path(f: str) -> bool:
        return "/" in f

    if len(fields) == 1:
        listen_count = 1
    elif is_path(fields[0]):
        listen_count = 1
    elif len(fields) == 2:
        listen_count = 1 if is_path(fields[1]) else 2
    elif len(fields) == 3:
        listen_count = 2 if is_path(fields[2]) else 1
    else:
        listen_count = 2
    listen = ":".join(fields[:listen_count])
    target = ":".join(fields[listen_count:]) or None
    return RemoteForwardSpec(text=text, listen=listen, target=target, source=source)


def split_config_line(line: str) -> tuple[str, list[str]]:
    """An ssh_config line (or `-o` argument) as (keyword in lower case, arguments).

    OpenSSH separates the keyword from its arguments by whitespace or one `=` (with optional
    whitespace around it); keywords are case-insensitive; arguments may be quoted.
    """
    match = re.match(r"\s*([^\s=]+)\s*=?\s*(.*)$", line, re.DOTALL)
    if not match:
        return "", []
    keyword, rest = match.group(1).lower(), match.group(2).strip()
    try:
        args = shlex.split(rest, comments=True)
    except ValueError:  # an unbalanced quote: ssh rejects the line, we keep the words
        args = rest.split()
    return keyword, args


def remote_forward_from_config(args: Sequence[str], source: str) -> Optional[RemoteForwardSpec]:
    """A `RemoteForward listen [target]` directive (config file or `-o`) as a spec.

    With one argument it is a remote dynamic forward, as in readconf.c.
    """
    if not args:
        return None
    text = f"{args[0]}:{args[1]}" if len(args) > 1 else args[0]
    return parse_remote_forward(text, source)


def _parse_port(value: str) -> Optional[int]:
    # isascii: str.isdigit() also accepts digits int() refuses, such as superscripts.
    return int(value) if value.isascii() and value.isdigit() else None


def is_yes(args: Sequence[str]) -> bool:
    """Whether a yes/no option's arguments say yes."""
    return bool(args) and args[0].lower() in ("yes", "true")


@dataclass
class _Builder:
    """Collects options as the getopt loop meets them."""

    client: str
    destination: Optional[str] = None
    forwards: list[RemoteForwardSpec] = field(default_factory=list)
    config_file: Optional[str] = None
    port: Optional[int] = None
    exits_early: bool = False
    mux_command: Optional[str] = None
    clear_all_forwardings: Optional[bool] = None  # the first value given wins, as in ssh

    def option(self, letter: str, value: Optional[str]) -> None:
        if letter == "R" and value is not None:
            self.forwards.append(parse_remote_forward(value, "-R"))
        elif letter == "o" and value is not None:
            self.config_option(value)
        elif letter == "F":
            self.config_file = value
        elif letter == "p" and value is not None and self.port is None:
            self.port = _parse_port(value)
        elif letter == "O":
            self.mux_command = value
        elif letter in EXIT_EARLY[self.client]:
            self.exits_early = True

    def config_option(self, line: str) -> None:
        keyword, args = split_config_line(line)
        if keyword == "remoteforward":
            spec = remote_forward_from_config(args, "-o RemoteForward")
            if spec:
                self.forwards.append(spec)
        elif keyword == "clearallforwardings" and self.clear_all_forwardings is None:
            self.clear_all_forwardings = is_yes(args)
        elif keyword == "port" and args and self.port is None:
            self.port = _parse_port(args[0])

    def set_destination(self, destination: str) -> None:
        self.destination = destination
        if self.port is None:
            self.port = _destination_port(destination)

    def build(self, remote_command: Sequence[str]) -> SshCommand:
        return SshCommand(
            client=self.client, destination=self.destination,
            remote_forwards=tuple(self.forwards), remote_command=tuple(remote_command),
            config_file=self.config_file, port=self.port, exits_early=self.exits_early,
            mux_command=self.mux_command,
            clear_all_forwardings=bool(self.clear_all_forwardings),
        )


def _destination_port(destination: str) -> Optional[int]:
    if destination.lower().startswith("ssh://"):
        authority = destination[len("ssh://"):].split("/", 1)[0].rsplit("@", 1)[-1]
        port = authority.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in authority else ""
        return _parse_port(port)
    host = destination.rsplit("@", 1)[-1]
    return _parse_port(host.split("/", 1)[1]) if "/" in host else None  # dropbear host/port


def _getopt(args: Sequence[str], start: int, with_value: frozenset,
            builder: _Builder) -> tuple[int, bool]:
    """BSD getopt from args[start]: feed options to the builder until the first non-option.

    Returns (index of the first non-option, whether `--` ended the options).
    """
    i = start
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1, True
        if not arg.startswith("-") or arg == "-":
            return i, False
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in with_value:
                value = arg[j + 1:]
                if not value:
                    i += 1
                    value = args[i] if i < len(args) else None
                builder.option(letter, value)
                break
            builder.option(letter, None)
            j += 1
        i += 1
    return i, False


def _parse_getopt_client(client: str, args: Sequence[str], with_value: frozenset) -> SshCommand:
    """OpenSSH's two getopt passes: options, destination, more options, command."""
    builder = _Builder(client)
    end, terminated = _getopt(args, 0, with_value, builder)
    if end >= len(args):
        return builder.build(())
    builder.set_destination(args[end])
    if terminated:
        return builder.build(args[end + 1:])
    command_start, _ = _getopt(args, end + 1, with_value, builder)
    return builder.build(args[command_start:])


def _parse_plink(args: Sequence[str]) -> SshCommand:
    """plink [options] [user@]host [options] [command]: whole-word options, read before and
    after the host (PuTTY's cmdline.c takes options wherever they come until the command);
    the first word after the host that is not an option starts the command."""
    builder = _Builder("plink")
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("-"):
            if builder.destination is not None and not builder.destination.startswith("saved session"):
                return builder.build(args[i:])
            builder.set_destination(word)
            i += 1
            continue
        value = args[i + 1] if word in PLINK_WITH_VALUE and i + 1 < len(args) else None
        if word == "-R" and value is not None:
            builder.forwards.append(parse_remote_forward(value, "-R"))
        elif word == "-P" and value is not None:
            builder.port = _parse_port(value)
        elif word == "-V":
            builder.exits_early = True
        elif word == "-load" and value is not None:
            # A saved session names the host: plink needs no host argument then.
            builder.destination = f"saved session {value}"
        i += 2 if word in PLINK_WITH_VALUE else 1
    return builder.build(())


def parse_ssh_command(client: str, args: Sequence[str]) -> SshCommand:
    """Parse the arguments (argv[1:]) of an ssh client of the given dialect.

    `client` is one of `openssh`, `autossh`, `dropbear`, `plink`.
    """
    return _parse_remembered(client, tuple(str(arg) for arg in args))


# Every exec's commands are read as ssh might read them, and hosts run the same few
# command lines over and over. Bounded: an argv is at most ARGV_BUF_LEN bytes.
@functools.lru_cache(maxsize=512)
def _parse_remembered(client: str, args: tuple[str, ...]) -> SshCommand:
    if client == "plink":
        return _parse_plink(args)
    table = {"openssh": OPENSSH_WITH_VALUE, "autossh": AUTOSSH_WITH_VALUE,
             "dropbear": DROPBEAR_WITH_VALUE}[client]
    return _parse_getopt_client(client, args, table)
