"""The fields a rule condition can name: declared once, here, as data.

Each row gives a field's dotted name, its type, the event kinds that carry it (empty: every
kind), what it means and, for a few, the values it can take. The table drives the condition
type checker, `rules lint`, and the field reference in docs/rules.md (`render_field_table`;
a test keeps the committed document equal to it).

Event fields are read by their path in the event (design.md's schema, top-level fields
unprefixed). A field whose type is a list (`process.argv`, `process.ancestry.comm`) compares
as any-of: `process.ancestry.comm = "sshd"` holds when some ancestor is sshd. Detector results
(`exec.miner.score`, `flow.stratum.variant`, ...) are computed on first use for an event, by
the same code the shipped detectors run, and at most once per event however many rules ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ebpfguard.detect.registry import Event

KINDS = ("exec", "exit", "socket", "connect", "flow", "dns", "open", "gpu", "summary")
TYPES = ("str", "int", "float", "bool", "ip", "list[str]", "list[int]")


@dataclass(frozen=True)
class Field:
    """One row of the field table."""

    name: str
    type: str
    kinds: tuple[str, ...]
    description: str
    values: tuple[str, ...] = ()  # every value it takes, where that is a closed set
    derived: bool = False  # a detector's result, computed on demand

    @property
    def element_type(self) -> str:
        return self.type[5:-1] if self.type.startswith("list[") else self.type


FIELDS: tuple[Field, ...] = (
    Field("kind", "str", (), "the event kind", values=KINDS),
    Field("time", "str", (), "RFC 3339 time, UTC, ns precision"),
    Field("node", "str", (), "host name"),
    Field("partial", "list[str]", (), "fields that could not be known (e.g. `ancestry`)"),
    Field("sandbox.name", "str", (), "the sandbox (lineage): a pattern match, pod, container, unit, `host`, or `unknown` in replay"),
    Field("sandbox.runtime", "str", (), "how the sandbox was recognised",
          values=("pattern", "kubernetes", "docker", "containerd", "systemd", "host")),
    Field("sandbox.cgroup", "str", (), "cgroup path, relative to the cgroup2 mount"),
    Field("sandbox.cgroup_id", "int", (), "cgroup id (inode of its directory)"),
    Field("sandbox.current_cgroup", "str", (), "the cgroup the process is in now, when it left its sandbox's"),
    Field("sandbox.pod", "str", (), "Kubernetes pod name"),
    Field("sandbox.namespace", "str", (), "Kubernetes namespace"),
    Field("sandbox.pod_uid", "str", (), "Kubernetes pod UID"),
    Field("sandbox.container_id", "str", (), "container id"),
    Field("process.pid", "int", (), "thread-group id, host pid namespace"),
    Field("process.ppid", "int", (), "parent pid"),
    Field("process.uid", "int", (), "user id"),
    Field("process.comm", "str", (), "command name (at most 15 bytes, as the kernel keeps it)"),
    Field("process.exe", "str", (), "executable path"),
    Field("process.argv", "list[str]", (), "arguments, argv[0] first (any-of)"),
    Field("process.cmdline", "str", (), "the arguments joined by single spaces", derived=True),
    Field("process.argv_truncated", "bool", (), "argv was longer than the kernel copies"),
    Field("process.ancestry.comm", "list[str]", (), "command names of the parents, nearest first (any-of)"),
    Field("process.ancestry.exe", "list[str]", (), "executables of the parents (any-of)"),
    Field("process.ancestry.pid", "list[int]", (), "pids of the parents (any-of)"),
    Field("filename", "str", ("exec", "open"), "the file executed (as passed) or the device opened"),
    Field("retval", "int", ("exec", "socket", "connect", "open"), "the call's result: 0 or more, or -errno"),
    Field("exit_code", "int", ("exit",), "exit status (absent when killed by a signal)"),
    Field("family", "str", ("socket", "connect"), "address family, e.g. `AF_INET`"),
    Field("type", "str", ("socket",), "socket type, e.g. `SOCK_STREAM`"),
    Field("protocol", "str", ("socket", "flow"), "protocol, e.g. `tcp`"),
    Field("daddr", "ip", ("connect", "flow", "dns"), "remote address"),
    Field("dport", "int", ("connect", "flow", "dns"), "remote port"),
    Field("sport", "int", ("flow", "dns"), "local port"),
    Field("host_netns", "bool", ("connect",), "the process shares the host's network namespace"),
    Field("direction", "str", ("flow", "dns"), "which side sent the bytes", values=("egress", "ingress")),
    Field("sni", "str", ("flow",), "server name of a TLS ClientHello"),
    Field("seq", "int", ("flow",), "segment number in its flow direction (0: the first)"),
    Field("dns_named", "bool", ("flow",), "a DNS answer the sandbox received named the remote address"),
    Field("payload_len", "int", ("flow",), "payload bytes in the segment"),
    Field("query", "str", ("dns",), "the question's name"),
    Field("qtype", "str", ("dns",), "the question's type, e.g. `A`"),
    Field("response", "bool", ("dns",), "the message is an answer"),
    Field("flags", "int", ("open",), "open(2) flags"),
    Field("memory_bytes", "int", ("gpu",), "GPU memory the process holds (NVML)"),
    Field("utilization_ratio", "float", ("gpu",), "GPU busy ratio, 0 to 1 (NVML)"),
    Field("busy_seconds", "float", ("gpu",), "how long the GPU has been kept busy"),
    Field("gpu.name", "str", ("gpu",), "the GPU's model name"),
    Field("gpu.uuid", "str", ("gpu",), "the GPU's UUID"),
    Field("window_s", "float", ("summary",), "seconds the summary covers"),
    Field("held_back.socket", "int", ("summary",), "socket events the per-sandbox rate limit held back"),
    Field("held_back.connect", "int", ("summary",), "connect events held back"),
    Field("held_back.flow", "int", ("summary",), "flow events held back"),
    Field("exec.miner.score", "int", ("exec",), "miner.exec's score of the command line (the best command)", derived=True),
    Field("exec.miner.min_score", "int", ("exec",), "the score miner.exec needs for that command", derived=True),
    Field("exec.miner.binary", "str", ("exec",), "the known miner binary matched, if any", derived=True),
    Field("exec.miner.hints", "list[str]", ("exec",), "miner.exec's hint names (`pool_url`, `wallet`, ...)", derived=True),
    Field("exec.ssh.client", "str", ("exec",), "ssh client dialect that parsed argv",
          values=("openssh", "autossh", "dropbear", "plink"), derived=True),
    Field("exec.ssh.remote_forwards", "list[str]", ("exec",), "remote (-R) forwards on the command line, as written", derived=True),
    Field("flow.stratum.variant", "str", ("flow",), "stratum dialect of this segment alone",
          values=("stratum1", "ethproxy", "nicehash", "monero", "ethstratum2", "grin"), derived=True),
    Field("flow.stratum.method", "str", ("flow",), "the stratum method (for a reply, the request it answers)", derived=True),
    Field("flow.stratum.login", "str", ("flow",), "the wallet or user.worker the segment carries", derived=True),
)


def _kind_aliases(fields: tuple[Field, ...]) -> tuple[Field, ...]:
    """`connect.dport`, `dns.query`, `flow.sni`...: a top-level event field under the name of a
    kind that carries it, holding only for events of that kind."""
    names = {field.name for field in fields}
    return tuple(
        Field(f"{kind}.{field.name}", field.type, (kind,), f"`{field.name}` of a {kind} event", field.values)
        for field in fields if field.kinds and "." not in field.name and not field.derived
        for kind in field.kinds if f"{kind}.{field.name}" not in names
    )


KIND_ALIASES = _kind_aliases(FIELDS)
ALIAS_OF: Mapping[str, str] = {alias.name: alias.name.split(".", 1)[1] for alias in KIND_ALIASES}
FIELDS_BY_NAME: Mapping[str, Field] = {field.name: field for field in FIELDS + KIND_ALIASES}

Getter = Callable[[Event, "FieldEnv"], Any]


class FieldEnv:
    """What derived fields need: the detectors whose code computes them.

    `detectors` are the engine's own instances by rule id (so a detector and the conditions
    share one computation per event); `make` builds one for a rule the engine does not run."""

    def __init__(self, detectors: Mapping[str, Any], make: Callable[[str], Optional[Any]]) -> None:
        self._detectors = dict(detectors)
        self._make = make

    def detector(self, rule_id: str) -> Optional[Any]:
        if rule_id not in self._detectors:
            self._detectors[rule_id] = self._make(rule_id)
        return self._detectors[rule_id]


class EventView:
    """One event as conditions see it: field values by name, derived ones computed once."""

    __slots__ = ("event", "env", "_cache")

    def __init__(self, event: Event, env: FieldEnv) -> None:
        self.event = event
        self.env = env
        self._cache: dict[str, Any] = {}

    def value(self, name: str) -> Any:
        """The field's value, None when the event does not carry it."""
        getter = GETTERS[name]
        if name not in _DERIVED:
            return getter(self.event, self.env)
        if name not in self._cache:
            self._cache[name] = getter(self.event, self.env)
        return self._cache[name]


def _path(*keys: str) -> Getter:
    # Events are dicts (JSON objects, or the enricher's); `dict` checks cost a fraction of
    # `Mapping` ones on this path, which runs for every comparison.
    if len(keys) == 1:
        (only,) = keys
        return lambda event, _env: event.get(only)
    if len(keys) == 2:
        outer, inner = keys

        def get_two(event: Event, _env: FieldEnv) -> Any:
            value = event.get(outer)
            return value.get(inner) if isinstance(value, dict) else None

        return get_two

    def get(event: Event, _env: FieldEnv) -> Any:
        value: Any = event
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return get


def _process(event: Event) -> Mapping[str, Any]:
    process = event.get("process")
    return process if isinstance(process, dict) else {}


def _ancestry(key: str) -> Getter:
    def get(event: Event, _env: FieldEnv) -> Any:
        ancestry = _process(event).get("ancestry")
        if not isinstance(ancestry, list):
            return None
        return [parent.get(key) for parent in ancestry if isinstance(parent, dict)]

    return get


def _cmdline(event: Event, _env: FieldEnv) -> Optional[str]:
    argv = _process(event).get("argv")
    if not isinstance(argv, list):
        argv = event.get("argv")
    return " ".join(str(arg) for arg in argv) if isinstance(argv, list) else None


def _miner(what: str) -> Getter:
    def get(event: Event, env: FieldEnv) -> Any:
        detector = env.detector("miner.exec")
        if event.get("kind") != "exec" or detector is None:
            return None
        assessed = detector.assess(event)
        if not assessed:
            return None
        best = max(assessed, key=lambda one: one.score)
        if what == "hints":
            return list(dict.fromkeys(hint.hint for hint in best.hints))
        if what == "binary":
            return best.binary or None
        return best.score if what == "score" else best.needed

    return get


def _ssh(what: str) -> Getter:
    def get(event: Event, env: FieldEnv) -> Any:
        from ebpfguard.detect.execinfo import exec_succeeded, program_and_args
        from ebpfguard.detect.ssh_command import parse_ssh_command

        detector = env.detector("tunnel.ssh_remote_forward")
        if event.get("kind") != "exec" or detector is None or not exec_succeeded(event):
            return None
        name, args = program_and_args(event)
        dialect = detector.dialect_of.get(name)
        if dialect is None:
            return None
        if what == "client":
            return dialect
        return [forward.text for forward in parse_ssh_command(dialect, args).remote_forwards]

    return get


def _stratum(what: str) -> Getter:
    def get(event: Event, _env: FieldEnv) -> Any:
        from ebpfguard.detect.miner_stratum import decode_payload
        from ebpfguard.detect.stratum import best_match, classify_segment, starts_like_json

        if event.get("kind") != "flow":
            return None
        payload = decode_payload(event.get("payload_b64"), 4096)
        if payload is None:
            return None
        at_start = event.get("seq") in (None, 0)
        if at_start and not starts_like_json(payload):
            return None
        match = best_match(classify_segment(payload, at_start).matches)
        return None if match is None else getattr(match, what)

    return get


_DERIVED_GETTERS: dict[str, Getter] = {
    "process.cmdline": _cmdline,
    "exec.miner.score": _miner("score"),
    "exec.miner.min_score": _miner("needed"),
    "exec.miner.binary": _miner("binary"),
    "exec.miner.hints": _miner("hints"),
    "exec.ssh.client": _ssh("client"),
    "exec.ssh.remote_forwards": _ssh("forwards"),
    "flow.stratum.variant": _stratum("variant"),
    "flow.stratum.method": _stratum("method"),
    "flow.stratum.login": _stratum("login"),
}
_DERIVED = frozenset(name for name, field in FIELDS_BY_NAME.items() if field.derived)


def _getter(field: Field) -> Getter:
    if field.derived:
        return _DERIVED_GETTERS[field.name]
    if field.name.startswith("process.ancestry."):
        return _ancestry(field.name.rsplit(".", 1)[1])
    return _path(*field.name.split("."))


GETTERS: Mapping[str, Getter] = {field.name: _getter(field) for field in FIELDS}


def _of_kind(kind: str, getter: Getter) -> Getter:
    return lambda event, env: getter(event, env) if event.get("kind") == kind else None


GETTERS = {**GETTERS, **{alias: _of_kind(alias.split(".", 1)[0], GETTERS[name]) for alias, name in ALIAS_OF.items()}}


def render_field_table() -> str:
    """The field reference of docs/rules.md, as Markdown (kind aliases summed up after it)."""
    lines = ["| field | type | kinds | description |", "| --- | --- | --- | --- |"]
    for field in FIELDS:
        kinds = ", ".join(field.kinds) if field.kinds else "all"
        description = field.description
        if field.values:
            description += " (" + ", ".join(f"`{value}`" for value in field.values) + ")"
        if field.derived and field.name != "process.cmdline":
            description += "; detector result"
        lines.append(f"| `{field.name}` | {field.type} | {kinds} | {description} |")
    aliases = ", ".join(f"`{alias.name}`" for alias in KIND_ALIASES)
    lines += ["", "Each event field of some kinds only also answers to `KIND.FIELD`, holding only for "
              f"events of that kind: {aliases}."]
    return "\n".join(lines) + "\n"
