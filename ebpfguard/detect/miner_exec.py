"""miner.exec: a cryptocurrency miner started, known by its name or by its command line.

Renaming the binary is the first thing cryptojacking campaigns do (`kworker`, `kdevtmpfsi`,
`systemd-journald`), so the name is only one hint among many: pool URLs and hosts, miner-only
options, algorithms, coins and wallet-shaped arguments each add a weight, and a command alerts
when its score reaches `min_score`. Each command an exec would run is scored on its own (the
exec itself unwrapped, and every command of its `sh -c` scripts and base64 payloads); in the
live agent, the `-c`/`--config` file is read and scored as part of its command.
"""

from __future__ import annotations

import functools

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

from ebpfguard.detect.cmdline import Command, command_list, program_name
from ebpfguard.detect.conditions import compile_globs
from ebpfguard.detect.execinfo import NoFindings, exec_key
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector

HINT_NAMES = (
    "binary", "generic_binary", "disguise", "pool_url", "pool_host", "pool_option", "donate",
    "algo", "coin", "wallet", "wallet_shape", "gpu_option", "miner_option", "node_mining",
    "argv_hidden", "argv_changed", "argv_padded", "config_unreadable",
)
# The exec event's `argv_anomalies` (ebpfguard/enrich/exec_join.py) that mean the command line
# was built past what a probe reads at once: padded, or placed where it cannot read it.
HIDING_ANOMALIES = ("past_entry_bounds", "unreadable_at_entry", "truncated", "stack_incomplete", "stack_held_back")
MAX_MATCH_CHARS = 160
MAX_CONFIG_BYTES = 256 * 1024

_POOL_URL = re.compile(
    r"\b(?:stratum[0-9]?(?:\+[a-z0-9]+)*|ethproxy(?:\+[a-z]+)?|ethstratum(?:\+[a-z]+)?|nicehash\+[a-z]+)://\S+",
    re.IGNORECASE,
)
_HOST_PORT = re.compile(r"^(?:[a-z]+(?:\+[a-z0-9]+)*://)?(?:[^@/\s]+@)?([a-z0-9.-]+\.[a-z0-9-]{2,}|\d{1,3}(?:\.\d{1,3}){3}):(\d{2,5})(?:/\S*)?$", re.IGNORECASE)
_BASE58 = "1-9A-HJ-NP-Za-km-z"
# CryptoNote addresses (Monero 4.../8..., integrated, and the coins forked from it) are long
# base58 strings: distinctive enough to count fully anywhere.
_CRYPTONOTE = re.compile(rf"[{_BASE58}]{{94,110}}\Z")
_KASPA = re.compile(r"(?:kaspa|karlsen|nexa|ironfish):[a-z0-9]{40,70}\Z")
# Shorter shapes (Bitcoin base58 and bech32, Ethereum, Ravencoin, Litecoin, Dogecoin, Zcash
# t-addresses, Ergo) also look like hashes and keys: they count fully only as a login.
_WALLET_SHAPES = re.compile(
    rf"(?:[13][{_BASE58}]{{25,34}}|(?:bc1|ltc1|tb1)[02-9ac-hj-np-z]{{11,71}}|0x[0-9a-fA-F]{{40}}"
    rf"|[RLMD][{_BASE58}]{{33}}|t1[{_BASE58}]{{33}}|9[{_BASE58}]{{50}})\Z"
)
# What may follow a miner's name: `(?:[-_.][a-z0-9.]+)*` written so that no character can be
# read two ways (that form backtracks exponentially on `xmrig.....!`).
_BINARY_SUFFIX = re.compile(r"(?:[-_.][a-z0-9.](?:[a-z0-9.]|[-_][a-z0-9.])*)?\Z")
# Labels before a pool domain (`a.b.` of `a.b.pool.example`), and host:port in a config text.
_LABELS = re.compile(r"(?:[a-z0-9-]+\.)*\Z")
_HOST_PORT_IN_TEXT = re.compile(r"(?<![\w.-])([a-z0-9.-]+):(\d{2,5})\b", re.IGNORECASE)
_COIN_PREFIX = re.compile(r"^[A-Za-z0-9]{2,8}:")
_JSON_PAIR = re.compile(r'"([\w-]{1,40})"\s*:\s*"([^"\\]{1,300})"')
_JSON_STRING = re.compile(r'"([^"\\]{26,300})"')
_DONATE_KEY = re.compile(r'"donate-level"\s*:|"donate-over-proxy"\s*:')
_CONFIG_POOL_KEYS = frozenset({"url", "pool", "pool_address", "server", "host", "stratum", "proxy"})
_CONFIG_USER_KEYS = frozenset({"user", "wallet", "wallet_address", "login", "address", "username", "worker"})


@dataclass(frozen=True)
class Hint:
    """One reason a command looks like a miner."""

    hint: str
    weight: int
    match: str
    source: str

    def as_evidence(self) -> dict:
        return {"hint": self.hint, "weight": self.weight, "match": self.match[:MAX_MATCH_CHARS], "source": self.source}


@dataclass(frozen=True)
class Assessment:
    """One command of an exec, scored: `needed` is the bar it must reach to alert."""

    score: int
    needed: int
    binary: str
    hints: list
    command: Command


@detector("miner.exec", kinds=("exec",))
class MinerExec(Detector):
    """Scores every command an exec would run; alerts on the best one that reaches the bar."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        params = ctx.params
        self.weights = {name: int(params["weights"][name]) for name in HINT_NAMES}
        self.min_score = int(params["min_score"])
        self.inert_factor = int(params["inert_factor"])
        self.binaries = _lower_set(params["binaries"])
        # Lists can be long (users extend them) and the names matched are the sandbox's: sets
        # and linear scans here, no regex alternation built from a list.
        self.binary_lengths = sorted({len(name) for name in self.binaries})
        self.generic_binaries = _lower_set(params["generic_binaries"])
        self.disguises = compile_globs(params["disguise_names"])
        self.algorithms = _lower_set(params["algorithms"])
        self.coins = _lower_set(params["coins"])
        self.pool_domains = _lower_set(params["pool_domains"])
        self.longest_domain = max((len(domain) for domain in self.pool_domains), default=0)
        self.options = {
            "pool": frozenset(params["pool_options"]),
            "user": frozenset(params["user_options"]),
            "algo": frozenset(params["algo_options"]),
            "coin": frozenset(params["coin_options"]),
            "donate": frozenset(params["donate_options"]),
            "gpu": frozenset(params["gpu_options"]),
            "miner": frozenset(params["miner_options"]),
            "config": frozenset(params["config_options"]),
        }
        self.port_options = frozenset(params["port_options"])
        self.node_mining_options = frozenset(params["node_mining_options"])
        self.node_daemon_mining_flags = frozenset(params["node_daemon_mining_flags"])
        self.node_daemons = _lower_set(params["node_daemons"])
        self.inert_commands = _lower_set(params["inert_commands"])
        self.system_dirs = tuple(directory.rstrip("/") + "/" for directory in params["system_dirs"])
        self.min_padding_args = int(params["min_padding_args"])
        if self.min_score < 1 or self.inert_factor < 1:
            raise ValueError("min_score and inert_factor must be at least 1")
        self._assessed: Optional[tuple[Event, tuple[Assessment, ...]]] = None
        self._listed: Optional[tuple[Event, list[Command]]] = None
        # A command's own hints depend on nothing else, and hosts run the same few command
        # lines over and over. Bounded: an argv is at most ARGV_BUF_LEN bytes.
        self._hints_of = functools.lru_cache(maxsize=512)(lambda command: tuple(self.command_hints(command)))
        self._quiet = NoFindings()

    def on_event(self, event: Event) -> Iterable[Finding]:
        key = exec_key(event)
        if key in self._quiet:
            return ()
        findings = list(self._findings(event))
        if not findings and not self.may_read_files(event):
            self._quiet.add(key)  # a score that read config files is no function of the exec alone
        return findings

    def may_read_files(self, event: Event) -> bool:
        """Whether scoring this exec reads config files (live only; never for an exec
        remembered quiet)."""
        if self.ctx.read_file is None or exec_key(event) in self._quiet:
            return False
        commands = self._commands(event)
        return bool(commands) and bool(self._config_paths(event, commands[0]))

    def _commands(self, event: Event) -> list[Command]:
        """The commands the exec would run (its argv through command_list), remembered for
        the last event, which may_read_files and assess both read."""
        if self._listed is not None and self._listed[0] is event:
            return self._listed[1]
        process = event.get("process") or {}
        argv = process.get("argv") or event.get("argv") or ()
        commands = command_list([str(arg) for arg in argv]) if isinstance(argv, (list, tuple)) and argv else []
        self._listed = (event, commands)
        return commands

    def _findings(self, event: Event) -> Iterator[Finding]:
        best = None
        for assessed in self.assess(event):
            if assessed.score >= assessed.needed and (best is None or assessed.score > best.score):
                best = assessed
        if best is None:
            return
        score, needed, binary, hints, command = best.score, best.needed, best.binary, best.hints, best.command
        named = binary or program_name(command.argv[0])
        reasons = ", ".join(dict.fromkeys(hint.hint for hint in hints))
        yield Finding(
            summary=f"miner started: {named} (score {score} >= {needed}: {reasons})",
            evidence={
                "binary": binary or None,
                "score": score,
                "min_score": needed,
                "hints": [hint.as_evidence() for hint in _strongest(hints)],
                "command": list(command.argv[:64]),
            },
        )

    def assess(self, event: Event) -> tuple["Assessment", ...]:
        """Every command the exec would run, scored; remembered for the last event, so the
        rule and user conditions over `exec.miner.*` score an event once between them."""
        if self._assessed is not None and self._assessed[0] is event:
            return self._assessed[1]
        assessed: list[Assessment] = []
        for index, command in enumerate(self._commands(event)):
            hints = list(self._hints_of(command))
            if index == 0:
                hints += self.exec_hints(event, command)
            needed = self.min_score * (self.inert_factor if self._is_inert(command, hints) else 1)
            assessed.append(Assessment(_score(hints), needed, _binary(hints), hints, command))
        self._assessed = (event, tuple(assessed))
        return self._assessed[1]

    # -- hints from a command's argv -----------------------------------------------------------

    def command_hints(self, command: Command) -> list[Hint]:
        """Hints from one command's name and arguments."""
        argv, source = command.argv, command.source
        hints = []
        name = program_name(argv[0])
        if self.is_miner_binary(name):
            hints.append(Hint("binary", self.weights["binary"], name, source))
        elif name in self.generic_binaries:
            hints.append(Hint("generic_binary", self.weights["generic_binary"], name, source))
        for option, value, token in _options(argv[1:]):
            hints.extend(self._argument_hints(option, value, token, source))
        hints.extend(self._split_pool_hints(argv[1:], source))
        hints.extend(self._node_mining_hints(name, argv[1:], source))
        return hints

    def _split_pool_hints(self, arguments: Sequence[str], source: str) -> Iterator[Hint]:
        """A pool given as a host option and a port option apart (GMiner's `--server HOST
        --port N`): read as the HOST:N the joined form would be."""
        hosts = [value for option, value, _ in _options(arguments)
                 if option in self.options["pool"] and value and "." in value and ":" not in value]
        ports = [value for option, value, _ in _options(arguments)
                 if option in self.port_options and value and value.isdigit()]
        if hosts and ports:
            joined = f"{hosts[0]}:{ports[0]}"
            yield Hint("pool_option", self.weights["pool_option"], joined, source)
            host = self._known_pool(joined)
            if host:
                yield Hint("pool_host", self.weights["pool_host"], host, source)

    def _node_mining_hints(self, name: str, arguments: Sequence[str], source: str) -> Iterator[Hint]:
        """A node daemon's built-in miner switched on (`monerod --start-mining`, `geth --mine`)."""
        for option, value, token in _options(arguments):
            if option in self.node_mining_options or (option in self.node_daemon_mining_flags and name in self.node_daemons):
                yield Hint("node_mining", self.weights["node_mining"], token if value is None else f"{option} {value}", source)
                return

    def _argument_hints(self, option: Optional[str], value: Optional[str], token: str, source: str) -> Iterator[Hint]:
        weights, options = self.weights, self.options
        url = _POOL_URL.search(token)
        if url:
            yield Hint("pool_url", weights["pool_url"], url.group(0), source)
        for host_port in (value, token):
            host = self._known_pool(host_port)
            if host:
                yield Hint("pool_host", weights["pool_host"], host, source)
                break
        if option is None:
            yield from self._wallet_hints(token, source, as_login=False)
            return
        if option in options["pool"] and value and _HOST_PORT.match(value):
            yield Hint("pool_option", weights["pool_option"], f"{option} {value}", source)
        if option in options["user"] and value:
            yield from self._wallet_hints(value, source, as_login=True)
        if option in options["donate"]:
            yield Hint("donate", weights["donate"], token if value is None else f"{option} {value}", source)
        if option in options["algo"] and value and value.lower() in self.algorithms:
            yield Hint("algo", weights["algo"], f"{option} {value}", source)
        if option in options["coin"] and value and value.lower() in self.coins:
            yield Hint("coin", weights["coin"], f"{option} {value}", source)
        if option in options["gpu"]:
            yield Hint("gpu_option", weights["gpu_option"], option, source)
        if option in options["miner"]:
            yield Hint("miner_option", weights["miner_option"], option, source)

    def is_miner_binary(self, name: str) -> bool:
        """A known miner's name, bare or with a version or platform suffix (`xmrig-6.21.0`)."""
        return any(length <= len(name) and name[:length] in self.binaries and _BINARY_SUFFIX.match(name, length)
                   for length in self.binary_lengths)

    def is_pool_host(self, host: str) -> bool:
        """A known pool domain or a name under one (`gulf.moneroocean.stream`)."""
        host = host.lower()
        if host in self.pool_domains:
            return True
        start = max(0, len(host) - self.longest_domain - 1)
        return any(host[dot + 1:] in self.pool_domains and _LABELS.match(host, 0, dot + 1)
                   for dot in range(start, len(host)) if host[dot] == ".")

    def _known_pool(self, text: Optional[str]) -> Optional[str]:
        match = _HOST_PORT.match(text) if text else None
        if match and self.is_pool_host(match.group(1)):
            return f"{match.group(1)}:{match.group(2)}"
        return None

    def _pool_host_in_text(self, text: str) -> Optional[str]:
        for match in _HOST_PORT_IN_TEXT.finditer(text):
            if self.is_pool_host(match.group(1)):
                return match.group(0)
        return None

    def _wallet_hints(self, text: str, source: str, *, as_login: bool) -> Iterator[Hint]:
        if len(text) < 26:
            return
        kind = wallet_kind(text)
        if kind == "distinctive" or (kind == "shape" and as_login):
            yield Hint("wallet", self.weights["wallet"], text, source)
        elif kind == "shape":
            yield Hint("wallet", self.weights["wallet_shape"], text, source)

    # -- hints that need the whole exec --------------------------------------------------------

    def exec_hints(self, event: Event, command: Command) -> list[Hint]:
        """Hints from the exec itself: a disguise name, and (live only) the config file."""
        hints = []
        process = event.get("process") or {}
        names = {program_name(str(value)) for value in (command.argv[0], event.get("filename"), process.get("exe")) if value}
        if isinstance(process.get("comm"), str):
            names.add(process["comm"])
        # A kernel thread's name in brackets may hold a slash (`[kworker/0:1]`, also at the end
        # of a path in argv[0]): the bracketed tail whole, not its last path component.
        arg0 = command.argv[0]
        if arg0.endswith("]") and "[" in arg0:
            names.add(arg0[arg0.rindex("["):])
        disguised = sorted(name for name in names if self.disguises.match(name))
        if disguised:
            hints.append(Hint("disguise", self.weights["disguise"], disguised[0], "argv"))
        hints.extend(self.argv_hints(event))
        read_file = self.ctx.read_file
        if read_file is not None:
            for path, named in self._config_paths(event, command):
                result = read_file(event, path)
                if result.data:
                    hints.extend(self.config_hints(result.data[:MAX_CONFIG_BYTES].decode("utf-8", "replace"), f"config:{path}"))
                elif named:
                    # A config named on the command line that vanished, is no regular file or
                    # could not be read in time: hiding the pool is a hint in itself.
                    hints.append(Hint("config_unreadable", self.weights["config_unreadable"],
                                      f"{path}: {result.why or 'empty'}", "config"))
        return hints

    def argv_hints(self, event: Event) -> list[Hint]:
        """A command line shaped to hide from a probe: read past the entry bounds, from pages
        not faulted in, changed between the call and the new program, or padded with empty or
        repeated arguments. None of these alerts alone; each adds to a miner's score."""
        process = event.get("process") or {}
        anomalies = event.get("argv_anomalies")
        anomalies = [str(a) for a in anomalies] if isinstance(anomalies, list) else []
        hidden = [a for a in anomalies if a in HIDING_ANOMALIES]
        if process.get("argv_truncated") is True and "truncated" not in hidden:
            hidden.append("truncated")
        hints = []
        if hidden:
            hints.append(Hint("argv_hidden", self.weights["argv_hidden"], ",".join(hidden), "argv"))
        if "changed_after_entry" in anomalies:
            hints.append(Hint("argv_changed", self.weights["argv_changed"], "changed_after_entry", "argv"))
        argv = process.get("argv") if isinstance(process.get("argv"), list) else []
        padding = padding_args([str(arg) for arg in argv[1:]])
        if padding >= self.min_padding_args:
            hints.append(Hint("argv_padded", self.weights["argv_padded"],
                              f"{padding} empty or repeated arguments", "argv"))
        return hints

    def _config_paths(self, event: Event, command: Command) -> list[tuple[str, bool]]:
        """(path, named on the command line) of the config files the command would read."""
        argv = command.argv
        paths = [(value, True) for option, value, _ in _options(argv[1:]) if option in self.options["config"] and value]
        filename = event.get("filename") or argv[0]
        # XMRig run bare loads config.json from its own directory, then from the working
        # directory (the renamed-miner favourite): where it is missing is no news.
        if len(argv) == 1 and isinstance(filename, str) and not filename.startswith(self.system_dirs):
            paths.append((posixpath.normpath(posixpath.join(posixpath.dirname(filename), "config.json")), False))
            paths.append(("config.json", False))
        return list(dict.fromkeys(paths))[:3]

    def config_hints(self, text: str, source: str) -> list[Hint]:
        """Hints from a miner config (XMRig config.json, xmr-stak pools.txt, ...)."""
        weights = self.weights
        hints = [Hint("pool_url", weights["pool_url"], match.group(0), source) for match in _POOL_URL.finditer(text)][:1]
        host = self._pool_host_in_text(text)
        if host:
            hints.append(Hint("pool_host", weights["pool_host"], host, source))
        if _DONATE_KEY.search(text):
            hints.append(Hint("donate", weights["donate"], _DONATE_KEY.search(text).group(0), source))
        for key, value in _JSON_PAIR.findall(text):
            key = key.lower()
            if key in _CONFIG_POOL_KEYS and _HOST_PORT.match(value):
                hints.append(Hint("pool_option", weights["pool_option"], f"{key}: {value}", source))
            elif key in _CONFIG_USER_KEYS:
                hints.extend(self._wallet_hints(value, source, as_login=True))
            elif key == "algo" and value.lower() in self.algorithms:
                hints.append(Hint("algo", weights["algo"], f"{key}: {value}", source))
            elif key == "coin" and value.lower() in self.coins:
                hints.append(Hint("coin", weights["coin"], f"{key}: {value}", source))
        for value in _JSON_STRING.findall(text):
            hints.extend(self._wallet_hints(value, source, as_login=False))
        return hints

    def _is_inert(self, command: Command, hints: Sequence[Hint]) -> bool:
        """A data-handling command (grep, pip, an editor) that is not itself a known miner."""
        return program_name(command.argv[0]) in self.inert_commands and not any(hint.hint == "binary" for hint in hints)


def wallet_kind(text: str) -> Optional[str]:
    """`distinctive` (CryptoNote, Kaspa-style), `shape` (BTC/ETH/RVN/...), or None.

    Pool logins decorate the address (`XMR:4...`, `0x....rig1`, `4...+50000`, `addr/worker`):
    the decoration is stripped first.
    """
    if _KASPA.match(text):
        return "distinctive"
    address = _COIN_PREFIX.sub("", text, count=1)
    address = re.split(r"[.+/]", address, maxsplit=1)[0]
    if _CRYPTONOTE.match(address):
        return "distinctive"
    if _WALLET_SHAPES.match(address):
        return "shape"
    return None


def padding_args(arguments: Sequence[str]) -> int:
    """How many arguments are empty or repeat an earlier one: filler that pushes the real
    arguments past what a probe reads."""
    seen: set[str] = set()
    padding = 0
    for arg in arguments:
        if not arg or arg in seen:
            padding += 1
        seen.add(arg)
    return padding


def _options(arguments: Sequence[str]) -> Iterator[tuple[Optional[str], Optional[str], str]]:
    """(option, its value or None, the raw token) for each argument; option None for operands.

    A value is the text after `=` or the next argument when that is not itself an option.
    """
    for index, token in enumerate(arguments):
        if token.startswith("-") and len(token) > 1:
            option, equals, value = token.partition("=")
            if not equals:
                following = arguments[index + 1] if index + 1 < len(arguments) else None
                value = following if following is not None and not following.startswith("-") else None
            yield option, value, token
        else:
            yield None, None, token


def _score(hints: Sequence[Hint]) -> int:
    """The sum of the strongest weight of each kind of hint: repeats do not add up."""
    return sum(hint.weight for hint in _strongest(hints))


def _strongest(hints: Sequence[Hint]) -> list[Hint]:
    best: dict[str, Hint] = {}
    for hint in hints:
        if hint.hint not in best or hint.weight > best[hint.hint].weight:
            best[hint.hint] = hint
    return list(best.values())


def _binary(hints: Sequence[Hint]) -> str:
    return next((hint.match for hint in hints if hint.hint == "binary"), "")


def _lower_set(values: Any) -> frozenset:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ValueError("expected a list")
    return frozenset(str(value).lower() for value in values)
