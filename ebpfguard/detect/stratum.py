"""Stratum v1 mining dialects recognised in the first bytes of a TCP flow: bytes in, verdicts out.

Pure functions, no state: the `miner.stratum` detector (miner_stratum.py) keeps the per-flow
reassembly and calls `classify_segment` on each stretch of bytes.

What counts as mining, per message (either direction: a pool is caught by its replies too):

* `stratum1`. Miner: `mining.subscribe`, `.authorize`, `.submit`, `.configure`,
  `.extranonce.subscribe`, `.suggest_difficulty`... Pool: `mining.notify`, `.set_difficulty`,
  `.set_extranonce`, `.set_version_mask`, the subscribe result naming `mining.notify`, the
  `mining.configure` result.
* `nicehash` (EthereumStratum/1.0.0). Miner: `mining.subscribe` naming `EthereumStratum/x`, a
  3-field `mining.submit`. Pool: the subscribe result naming `EthereumStratum/x`, a
  `mining.notify` of [job, seed hash, header hash, clean], a 1-field `mining.set_extranonce`.
* `ethproxy`. Miner: `eth_submitLogin`; `eth_getWork`, `eth_submitWork`, `eth_submitHashrate`
  when newline-framed. Pool: a result of three 256-bit hashes (header, seed, target) when
  newline-framed.
* `monero`. Miner: `login` with an `agent`, an `algo` list or a Monero wallet; `submit` with
  `job_id` and `nonce`; `getjob`; `keepalived`. Pool: `job` with `blob` and `job_id`; the login
  result carrying a `job`.
* `ethstratum2` (EthereumStratum/2.0.0, EIP-1571). Pool: `mining.hello` naming the protocol,
  `mining.set` (seed, target, extranonce, algo), `mining.reconnect`, `mining.bye`. Miner:
  `mining.subscribe` with an object of `agent`/`host`/`port`, `mining.noop`, `mining.hashrate`.
  Its notifications may come without `id` and `jsonrpc`: a `mining.*` method is enough.
* `grin` (Grin's and Beam's stratum). Grin: `getjobtemplate`, `job` with `pre_pow`, `submit`
  with a `pow` cycle, a `login` whose agent is a Grin miner, and replies that echo the method.
  Beam: `login` with a top-level `api_key`, `job` with `input`, `solution` with `output`.
* Pool messages seen alone in a direction: `mining.set_extranonce`, `client.reconnect` /
  `mining.reconnect`, a login result carrying a job.

Framing: stratum is newline-delimited JSON over a raw TCP stream. HTTP, the Language Server
Protocol (`Content-Length:` headers), Redis and SSH never start a message with `{` or `[`, so a
direction whose first bytes are not JSON is not stratum (the caller decides that from segment 0).

`eth_getWork` and friends over HTTP: these are Ethereum *node* methods (geth's getwork API),
used by wallets, explorers and monitoring that poll a node as well as by getwork-mode miners.
Over HTTP they are not stratum and `miner.stratum` does not fire: a node's JSON-RPC body has no
newline framing, and its flow starts with `POST`. The getwork methods count as EthProxy only as
newline-terminated lines on a raw stream, which no node serves; `eth_submitLogin` exists only in
EthProxy, so it counts framed or not. Getwork mining over HTTP is left to exec and pool rules.

Messages may be cut: the kernel captures at most a few hundred bytes per segment, so a long
Monero `login` (a 95-character wallet, then XMRig's list of algorithms) is often truncated.
`parse_messages` closes a truncated object at its last complete member and parses that.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

STRATUM1 = "stratum1"
ETHPROXY = "ethproxy"
NICEHASH = "nicehash"
MONERO = "monero"
ETHSTRATUM2 = "ethstratum2"
GRIN = "grin"

# Stratum v1 methods (slush's spec, BIP 310 `mining.configure`, NiceHash's extranonce extension,
# and the difficulty and version-rolling additions pools send).
STRATUM1_METHODS = frozenset({
    "mining.subscribe", "mining.authorize", "mining.submit", "mining.notify",
    "mining.set_difficulty", "mining.configure", "mining.extranonce.subscribe",
    "mining.set_extranonce", "mining.suggest_difficulty", "mining.suggest_target",
    "mining.set_target", "mining.set_version_mask", "mining.get_transactions",
    "mining.multi_version", "mining.ping", "client.reconnect", "mining.reconnect",
})
# Iron Fish's stratum (ironfish/src/mining/stratum): v1 names, objects in `params` or `body`.
IRONFISH_METHODS = frozenset({"mining.subscribed", "mining.wait_for_work", "mining.submitted", "mining.disconnect"})
# EthereumStratum/2.0.0 (EIP-1571): methods no other dialect has, and the members of the
# objects it puts where stratum v1 has arrays.
ETHSTRATUM2_METHODS = frozenset({"mining.hello", "mining.set", "mining.noop", "mining.bye", "mining.hashrate"})
ETHSTRATUM2_SET_KEYS = ("epoch", "seed", "target", "extranonce", "algo")
ETHSTRATUM2_SUBSCRIBE_KEYS = ("host", "port", "session")
# Methods that need no `id`/`jsonrpc` member to be read as mining (EIP-1571 notifications).
MINING_NAMESPACE = ("mining.", "client.reconnect")
GRIN_AGENTS = ("grin", "cuckoo", "cuckatoo", "cuckaroo", "gminer", "lolminer", "bminer")
# The extensions a pool accepts in its reply to BIP 310 `mining.configure`.
CONFIGURE_EXTENSIONS = ("version-rolling", "minimum-difficulty", "subscribe-extranonce")
# Methods that are Ethereum node methods too: EthProxy only when newline-framed (module doc).
ETHPROXY_WORK_METHODS = frozenset({"eth_getWork", "eth_submitWork", "eth_submitHashrate"})
ETHPROXY_LOGIN = "eth_submitLogin"
NICEHASH_PROTOCOL = "EthereumStratum/"
HASH256 = re.compile(r"0x[0-9a-fA-F]{64}")
HEX256 = re.compile(r"[0-9a-fA-F]{64}")
# Monero standard (4...) and integrated/subaddress (4.../8...) addresses, base58.
MONERO_WALLET = re.compile(r"[48][1-9A-HJ-NP-Za-km-z]{94}(?:[1-9A-HJ-NP-Za-km-z]{11})?")
MAX_LOGIN_CHARS = 200


@dataclass(frozen=True)
class StratumMatch:
    """One message that is mining: its dialect, its method (for a reply, the request it answers)
    and the pool login (wallet or user.worker) when the message carries one."""

    variant: str
    method: str
    login: Optional[str] = None


def starts_like_json(data: bytes) -> bool:
    """Whether bytes open a JSON-RPC message: optional whitespace, then `{` or `[`."""
    stripped = data.lstrip(b" \t\r\n")
    return stripped[:1] in (b"{", b"[")


@dataclass(frozen=True)
class Segment:
    """What a stretch of a stream holds: the matches on its complete (newline-terminated)
    lines, those on its unterminated last line, and that line (None: where it starts is not
    known, so no later bytes can complete it)."""

    complete: tuple[StratumMatch, ...]
    partial: tuple[StratumMatch, ...]
    tail: Optional[bytes]
    # The unterminated last line is whole JSON already (a sender that writes the newline
    # apart, or never): what follows cannot change its verdict, so it need not wait.
    tail_whole: bool = False

    @property
    def matches(self) -> tuple[StratumMatch, ...]:
        return self.complete + self.partial


def classify_segment(data: bytes, at_message_start: bool) -> Segment:
    """Mining messages in a stretch of a stream, and its unterminated last line.

    `data` holds newline-delimited messages; `at_message_start` says whether its first byte
    begins a message (False after a gap: the first line is then the tail of a message whose
    start was not seen, and is skipped). Complete lines are newline-framed; the last line, if
    not terminated, is classified as unframed (it may be a truncated capture) and returned so
    the caller can prepend it to the next segment of the same flow.
    """
    *lines, tail = data.split(b"\n")
    if not at_message_start:
        if not lines:
            return Segment((), (), None)
        lines = lines[1:]
    complete = tuple(m for line in lines for m in classify_line(line, framed=True))
    return Segment(complete, tuple(classify_line(tail, framed=False)), tail, is_whole_json(tail))


def is_whole_json(data: bytes) -> bool:
    """Whether bytes are one or more complete JSON values and nothing else."""
    text = data.decode("utf-8", errors="replace").strip()
    if text[:1] not in ("{", "[") or text[-1:] not in ("}", "]"):
        return False
    decoder, position = json.JSONDecoder(), 0
    try:
        while position < len(text):
            _, position = decoder.raw_decode(text, position)
            while position < len(text) and text[position] in " \t\r":
                position += 1
    except (ValueError, RecursionError):
        return False
    return True


def classify_line(line: bytes, framed: bool) -> list[StratumMatch]:
    """Mining messages on one line (several if the sender concatenated objects)."""
    text = line.decode("utf-8", errors="replace").strip()
    if text[:1] not in ("{", "["):
        return []
    verdicts = (classify_message(message, framed) for message in parse_messages(text))
    return [verdict for verdict in verdicts if verdict is not None]


def parse_messages(text: str) -> list[Any]:
    """The JSON values on a line: each complete one, then a truncated one closed if possible."""
    decoder = json.JSONDecoder()
    values, position = [], 0
    while position < len(text):
        try:
            value, position = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            closed = close_truncated(text[position:])
            return values + ([closed] if closed is not None else [])
        values.append(value)
        while position < len(text) and text[position] in " \t\r":
            position += 1
    return values


def close_truncated(text: str) -> Optional[Any]:
    """A truncated JSON value made whole: closed as it stands, or cut at its last member.

    `{"id":1,"method":"login","params":{"login":"4...","pass":"x","algo":["rx/0","cn/` becomes
    `{"id":1,"method":"login","params":{"login":"4...","pass":"x","algo":["rx/0"]}}`. None when
    neither candidate parses (say, the text is not JSON at all).
    """
    closers, in_string, last_comma = _scan(text)
    candidates = []
    if closers is not None and not in_string:
        candidates.append(text + closers)
    if last_comma is not None:
        cut_closers, _, _ = _scan(text[:last_comma])
        if cut_closers is not None:
            candidates.append(text[:last_comma] + cut_closers)
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    return None


def _scan(text: str) -> tuple[Optional[str], bool, Optional[int]]:
    """(the closing brackets the text still needs, None if they mismatch; whether it ends inside
    a string; the index of its last comma outside strings)."""
    stack: list[str] = []
    in_string = escaped = False
    last_comma = None
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            stack.append("}")
        elif char == "[":
            stack.append("]")
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None, in_string, last_comma
        elif char == ",":
            last_comma = index
    return "".join(reversed(stack)), in_string, last_comma


# Lists inside lists looked into: a JSON-RPC batch is one, a sender's odd wrapping a few more;
# a flow's payload nested thousands deep must not recurse as deep (it is sandbox input).
MAX_BATCH_NESTING = 4


def classify_message(message: Any, framed: bool, nesting: int = 0) -> Optional[StratumMatch]:
    """The mining verdict for one parsed JSON-RPC message (a batch: its first mining element)."""
    if isinstance(message, list):
        if nesting >= MAX_BATCH_NESTING:
            return None
        return next((m for m in (classify_message(item, framed, nesting + 1) for item in message[:16])
                     if m is not None), None)
    if not isinstance(message, Mapping):
        return None
    method = message.get("method")
    if not ("id" in message or "jsonrpc" in message):
        if not (isinstance(method, str) and method.startswith(MINING_NAMESPACE)):
            return None
    beam = _beam(method, message)
    if beam is not None:
        return beam
    if isinstance(method, str):
        if "result" in message:  # Grin's replies repeat the request's method
            grin = _grin_reply(method, message["result"])
            if grin is not None:
                return grin
        params = message["params"] if "params" in message else message.get("body")
        return _request_or_notification(method, params, framed)
    if "result" in message:
        return _reply(message["result"], framed)
    return None


def _request_or_notification(method: str, params: Any, framed: bool) -> Optional[StratumMatch]:
    v2 = _ethstratum2(method, params)
    if v2 is not None:
        return v2
    if method == "getjobtemplate":  # Grin's job request: a name no other protocol uses
        return StratumMatch(GRIN, method)
    if method in IRONFISH_METHODS or (method in STRATUM1_METHODS and isinstance(params, Mapping)):
        # v1 method names with object params (Iron Fish, Alephium's submit, CodeChain).
        return StratumMatch(STRATUM1, method)
    if method in STRATUM1_METHODS and (params is None or isinstance(params, list)):
        if _nicehash_shaped(method, params or []):
            return StratumMatch(NICEHASH, method)
        login = _login(params[0]) if method == "mining.authorize" and params else None
        return StratumMatch(STRATUM1, method, login)
    if method == ETHPROXY_LOGIN and isinstance(params, list):
        return StratumMatch(ETHPROXY, method, _login(params[0]) if params else None)
    if method in ETHPROXY_WORK_METHODS and framed and (params is None or isinstance(params, list)):
        return StratumMatch(ETHPROXY, method)
    if isinstance(params, Mapping):
        return _monero(method, params)
    return None


def _ethstratum2(method: str, params: Any) -> Optional[StratumMatch]:
    """EIP-1571 messages: its own methods, and v1 methods with its object-shaped params."""
    if method == "mining.hello":
        proto = params.get("proto") if isinstance(params, Mapping) else None
        return StratumMatch(ETHSTRATUM2, method) if isinstance(proto, str) and proto.startswith("EthereumStratum/") else None
    if method == "mining.set":
        return StratumMatch(ETHSTRATUM2, method) if isinstance(params, Mapping) and any(k in params for k in ETHSTRATUM2_SET_KEYS) else None
    if method in ETHSTRATUM2_METHODS:
        return StratumMatch(ETHSTRATUM2, method)
    if isinstance(params, list) and len(params) == 3 and isinstance(params[1], str):
        # v2's job is [job id, 0x header hash, clean] and its share [job id, 0x nonce, worker
        # token]; NiceHash's share is [worker, job id, bare nonce].
        if method == "mining.notify" and HASH256.fullmatch(params[1]) and isinstance(params[2], bool):
            return StratumMatch(ETHSTRATUM2, method)
        if method == "mining.submit" and params[1].startswith("0x"):
            return StratumMatch(ETHSTRATUM2, method)
    if isinstance(params, Mapping):
        if method == "mining.subscribe" and any(k in params for k in ETHSTRATUM2_SUBSCRIBE_KEYS):
            return StratumMatch(ETHSTRATUM2, method)
        if method == "mining.reconnect" and "host" in params:
            return StratumMatch(ETHSTRATUM2, method)
    return None


def _grin_reply(method: str, result: Any) -> Optional[StratumMatch]:
    """Grin's replies carry the method they answer: a job template, or a share verdict."""
    if method == "getjobtemplate":
        return StratumMatch(GRIN, method)
    if method == "submit" and isinstance(result, str) and (result == "ok" or result.startswith("blockfound")):
        return StratumMatch(GRIN, method)
    return None


def _beam(method: Any, message: Mapping[str, Any]) -> Optional[StratumMatch]:
    """Beam's stratum puts its fields beside `method`, not in `params`."""
    if method == "login" and isinstance(message.get("api_key"), str):
        return StratumMatch(GRIN, "login", _login(message["api_key"]))
    if method == "job" and _is_hex(message.get("input"), 64) and _integer(message.get("difficulty")):
        return StratumMatch(GRIN, method)
    if method == "solution" and _has_keys(message, ("nonce", "output")):
        return StratumMatch(GRIN, method)
    return None


def _monero(method: str, params: Mapping[str, Any]) -> Optional[StratumMatch]:
    if method == "job" and "pre_pow" in params:
        return StratumMatch(GRIN, method)
    if method == "submit" and isinstance(params.get("pow"), list) and "nonce" in params:
        return StratumMatch(GRIN, method)
    if method == "login":
        login = params.get("login")
        if not isinstance(login, str):
            return None
        agent = params.get("agent")
        if isinstance(agent, str) and any(name in agent.lower() for name in GRIN_AGENTS) and "algo" not in params:
            return StratumMatch(GRIN, method, _login(login))
        if "agent" in params or "algo" in params or MONERO_WALLET.fullmatch(login):
            return StratumMatch(MONERO, method, _login(login))
        return None
    if method == "job" and _has_keys(params, ("blob", "job_id")):
        return StratumMatch(MONERO, method)
    if method == "submit" and _has_keys(params, ("job_id", "nonce")):
        return StratumMatch(MONERO, method)
    if method in ("keepalived", "getjob"):
        return StratumMatch(MONERO, method)
    return None



def _reply(result: Any, framed: bool) -> Optional[StratumMatch]:
    if isinstance(result, Mapping):
        proto = result.get("proto")
        if isinstance(proto, str) and proto.startswith(NICEHASH_PROTOCOL + "2"):
            return StratumMatch(ETHSTRATUM2, "mining.hello")
        job = result.get("job")
        if isinstance(job, Mapping) and _has_keys(job, ("blob", "job_id")):
            return StratumMatch(MONERO, "login")
        if any(key in result for key in CONFIGURE_EXTENSIONS):
            return StratumMatch(STRATUM1, "mining.configure")
        return None
    if not isinstance(result, list):
        return None
    strings = list(_strings(result, depth=3))
    if any(_is_nicehash_tag(s) for s in strings):
        return StratumMatch(NICEHASH, "mining.subscribe")
    if any(s in ("mining.notify", "mining.set_difficulty") for s in strings):
        return StratumMatch(STRATUM1, "mining.subscribe")
    if framed and 3 <= len(result) <= 4 and all(isinstance(s, str) and HASH256.fullmatch(s) for s in result[:3]):
        return StratumMatch(ETHPROXY, "eth_getWork")
    return None


def _strings(value: Sequence[Any], depth: int) -> Iterator[str]:
    """The strings in nested lists, at most `depth` levels down (subscribe results nest 3)."""
    for item in value[:16]:
        if isinstance(item, str):
            yield item
        elif isinstance(item, list) and depth > 1:
            yield from _strings(item, depth - 1)


def _nicehash_shaped(method: str, params: list) -> bool:
    """EthereumStratum/1.0.0 messages by their spec's shapes: the subscribe names the protocol;
    a job is [job id, seed hash, header hash, clean] (bitcoin's has nine fields); a share is
    [user, job id, miner nonce] (bitcoin's has five); an extranonce comes without a size."""
    if method == "mining.subscribe":
        return any(_is_nicehash_tag(p) for p in params)
    if method == "mining.notify":
        return (len(params) == 4 and isinstance(params[3], bool)
                and all(isinstance(p, str) and HEX256.fullmatch(p) for p in params[1:3]))
    if method == "mining.submit":
        return len(params) == 3
    if method == "mining.set_extranonce":
        return len(params) == 1
    return False


def _is_nicehash_tag(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(NICEHASH_PROTOCOL)


def _is_hex(value: Any, min_chars: int) -> bool:
    return isinstance(value, str) and len(value) >= min_chars and all(c in "0123456789abcdefABCDEF" for c in value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_keys(mapping: Mapping[str, Any], keys: Iterable[str]) -> bool:
    return all(key in mapping for key in keys)


def _login(value: Any) -> Optional[str]:
    """A login as evidence: a string, cut to a sane length."""
    return value[:MAX_LOGIN_CHARS] if isinstance(value, str) and value else None


def best_match(matches: Sequence[StratumMatch]) -> Optional[StratumMatch]:
    """The most telling of a segment's matches: the first with a login, else the first; plain
    stratum reads as NiceHash when the segment also holds a NiceHash subscribe (after it, a
    NiceHash flow's `mining.authorize` and `mining.notify` look like any stratum)."""
    if not matches:
        return None
    chosen = next((match for match in matches if match.login), matches[0])
    if chosen.variant == STRATUM1 and any(match.variant == NICEHASH for match in matches):
        return replace(chosen, variant=NICEHASH)
    return chosen
