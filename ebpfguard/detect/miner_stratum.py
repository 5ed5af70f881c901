"""`miner.stratum`: a mining protocol on the wire, on any port, in either direction.

The kernel sends the first few data segments of each direction of a TCP flow whose first bytes
could be JSON-RPC, as `flow` events (design.md) carrying `flow_id` (the socket cookie) and
`seq` (the segment's index in its direction). Stratum is newline-delimited JSON, and a message
may straddle two segments, so each direction of a flow keeps its unterminated last line and
prepends it to the next segment when that one follows directly (`seq` one higher, the previous
segment not cut short by the capture limit), and a verdict on such an unfinished line waits
for the rest unless this was the last segment the kernel sends. The classification itself is
stratum.py.

One alert per flow: once a flow alerts, both its directions are forgotten and later segments
are ignored. State is bounded: at most `max_flows` directions are tracked (least recently seen
evicted), each holding at most `max_carry_bytes`; each event's payload is read up to
`max_payload_bytes`. Without `flow_id` (a hand-written replay event) an event is a flow of its
own, classified alone.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector
from ebpfguard.detect.stratum import StratumMatch, best_match, classify_segment, starts_like_json

VARIANT_NAMES = {"stratum1": "Stratum", "ethproxy": "EthProxy", "nicehash": "NiceHash EthereumStratum",
                 "monero": "Monero stratum", "ethstratum2": "EthereumStratum/2.0.0", "grin": "Grin/Beam stratum"}
DEFAULTS = {"max_flows": 16384, "max_carry_bytes": 4096, "max_payload_bytes": 4096, "capture_bytes": 512,
            "segments_per_direction": 4}


@dataclass
class _Stream:
    """Reassembly state of one direction of one flow."""

    next_seq: Optional[int] = None
    # The unterminated last line so far; None when where the next message starts is unknown.
    carry: Optional[bytes] = b""
    json: bool = True  # False once its first bytes were not JSON: never stratum


def decode_payload(value: Any, limit: int) -> Optional[bytes]:
    """The first `limit` bytes of a base64 payload; None if it is not base64."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value[: (limit + 2) // 3 * 4], validate=True)[:limit]
    except (binascii.Error, ValueError):
        return None


def _integer(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _positive_params(params: Mapping[str, Any]) -> dict[str, int]:
    values = {name: params.get(name, default) for name, default in DEFAULTS.items()}
    for name, value in values.items():
        if _integer(value) is None or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return values


@detector("miner.stratum", kinds=("flow",))
class StratumDetector(Detector):
    """Stratum v1, EthProxy, NiceHash and Monero stratum messages in flow payloads."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        params = _positive_params(ctx.params)
        self.max_flows = params["max_flows"]
        self.max_carry_bytes = params["max_carry_bytes"]
        self.max_payload_bytes = params["max_payload_bytes"]
        self.capture_bytes = params["capture_bytes"]
        self.segments_per_direction = params["segments_per_direction"]
        self._streams: OrderedDict[tuple[int, Any], _Stream] = OrderedDict()
        self._alerted: OrderedDict[int, None] = OrderedDict()

    def on_event(self, event: Event) -> Iterable[Finding]:
        payload = decode_payload(event.get("payload_b64"), self.max_payload_bytes)
        if payload is None:
            return []
        flow_id, seq = _integer(event.get("flow_id")), _integer(event.get("seq"))
        if flow_id is None:
            match = self._classify_alone(payload, seq)
        elif flow_id in self._alerted:
            self._alerted.move_to_end(flow_id)
            return []
        else:
            match = self._classify_in_flow(flow_id, event.get("direction"), seq, payload)
        if match is None:
            return []
        if flow_id is not None:
            self._remember_alerted(flow_id)
        return [_finding(match, event)]

    def _classify_alone(self, payload: bytes, seq: Optional[int]) -> Optional[StratumMatch]:
        at_start = seq in (None, 0)
        if at_start and not starts_like_json(payload):
            return None
        return best_match(classify_segment(payload, at_start).matches)

    def _classify_in_flow(self, flow_id: int, direction: Any, seq: Optional[int],
                          payload: bytes) -> Optional[StratumMatch]:
        stream, first = self._stream(flow_id, direction)
        if not stream.json:
            return None
        if first:
            at_start = seq in (None, 0)
            if at_start and not starts_like_json(payload):
                # HTTP, LSP, Redis, SSH...: the whole direction is something else.
                stream.json = False
                return None
            data = payload
        elif stream.carry is None or (seq is not None and stream.next_seq is not None and seq != stream.next_seq):
            # A gap (a lost or reordered segment, or a capture cut short): resynchronise on
            # the next newline rather than glue unrelated bytes together.
            data, at_start = payload, False
        else:
            data, at_start = stream.carry + payload, True
        segment = classify_segment(data, at_start)
        stream.next_seq = seq + 1 if seq is not None else None
        cut_short = len(payload) >= self.capture_bytes
        tail = segment.tail
        stream.carry = None if cut_short or tail is None or len(tail) > self.max_carry_bytes else tail
        # A message that the next segment will complete is judged whole then: its first half
        # may lack what tells NiceHash from stratum, or the login. Unless no next segment comes.
        last_segment = seq is None or seq + 1 >= self.segments_per_direction
        waits = stream.carry and not last_segment and not segment.tail_whole
        return best_match(segment.complete if waits else segment.matches)

    def _stream(self, flow_id: int, direction: Any) -> tuple[_Stream, bool]:
        """The state of one direction of a flow, and whether it is new."""
        key = (flow_id, direction)
        stream = self._streams.get(key)
        if stream is not None:
            self._streams.move_to_end(key)
            return stream, False
        stream = self._streams[key] = _Stream()
        if len(self._streams) > self.max_flows:
            self._streams.popitem(last=False)
        return stream, True

    def _remember_alerted(self, flow_id: int) -> None:
        for direction in ("egress", "ingress"):
            self._streams.pop((flow_id, direction), None)
        self._alerted[flow_id] = None
        if len(self._alerted) > self.max_flows:
            self._alerted.popitem(last=False)


def _finding(match: StratumMatch, event: Event) -> Finding:
    direction = event.get("direction")
    daddr, dport = event.get("daddr"), event.get("dport")
    towards = "to" if direction == "egress" else "from"
    login = f", login {match.login}" if match.login else ""
    evidence = {"variant": match.variant, "method": match.method}
    if match.login:
        evidence["login"] = match.login
    evidence.update(direction=direction, daddr=daddr, dport=dport)
    return Finding(
        summary=f"{VARIANT_NAMES[match.variant]} mining traffic ({match.method}{login}) "
                f"{towards} {daddr if daddr is not None else 'a pool'} port {dport}",
        evidence=evidence,
    )
