"""Network records as events: socket, connect, flow (first bytes, TLS SNI) and DNS."""

from __future__ import annotations

import base64
import socket
from collections import OrderedDict
from typing import Optional

from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.fields import address_text, family_name, mark_partial, protocol_name, socket_fields
from ebpfguard.enrich.wire.dns import DnsParseError, parse_dns_message, parse_dns_tcp
from ebpfguard.enrich.wire.tls import client_hello_sni
from ebpfguard.kernel.events import ConnectRecord, FlowRecord, SocketRecord

DNS_PORT = 53
IPPROTO_TCP = 6
# (sandbox, address) pairs remembered from DNS answers, least recently named evicted.
MAX_NAMED_ADDRESSES = 65536


class NetworkEvents:
    """`host_netns_cookie` is the cookie of the host's network namespace (None where the
    kernel cannot tell): a connect from it reaches the host's own loopback."""

    def __init__(self, envelope: EventEnvelope, host_netns_cookie: Optional[int],
                 max_named_addresses: int = MAX_NAMED_ADDRESSES) -> None:
        self.envelope = envelope
        self.host_netns_cookie = host_netns_cookie
        self.max_named_addresses = max_named_addresses
        # Addresses that DNS answers received by each sandbox named: a flow to one of them
        # has a name (`dns_named`), one to any other was reached by a bare address (XMRig's
        # TLS without SNI to a pool's IP shows up so).
        self._named: OrderedDict[tuple[str, str], None] = OrderedDict()

    def socket_event(self, rec: SocketRecord) -> dict:
        """A `socket` event: socket(2)'s arguments by name, and its result."""
        event = self.envelope.about_process("socket", rec.hdr)
        event.update(socket_fields(rec.family, rec.type, rec.protocol))
        event["retval"] = rec.retval
        return event

    def connect_event(self, rec: ConnectRecord) -> dict:
        """A `connect` event; `retval` is null for a connect made outside connect(2)."""
        event = self.envelope.about_process("connect", rec.hdr)
        event["family"] = family_name(rec.family)
        event["daddr"] = address_text(rec.daddr)
        event["dport"] = rec.dport
        event["retval"] = rec.retval if rec.in_syscall else None
        if not rec.in_syscall:
            mark_partial(event, "retval")
        event["sock_cookie"] = rec.sock_cookie
        if self.host_netns_cookie is not None:
            event["host_netns"] = rec.netns_cookie == self.host_netns_cookie
        return event

    def flow_event(self, rec: FlowRecord) -> dict:
        """A `flow` event (the first bytes of one segment; `sni` from a TLS ClientHello), or a
        `dns` event for port 53. Raises DnsParseError for a DNS packet that does not parse."""
        if DNS_PORT in (rec.dport, rec.sport):
            return self.dns_event(rec)
        event = self._flow_base("flow", rec)
        event["seq"] = rec.seq
        event["dns_named"] = (event["sandbox"]["name"], event["daddr"]) in self._named
        event["payload_len"] = rec.payload_len
        event["payload_b64"] = base64.b64encode(rec.payload).decode("ascii")
        if rec.egress and rec.seq == 0:
            sni = client_hello_sni(rec.payload)
            if sni is not None:
                event["sni"] = sni
        return event

    def dns_event(self, rec: FlowRecord) -> dict:
        """A `dns` event: the question, and the answers when it is a response."""
        tcp = rec.protocol == IPPROTO_TCP
        message = parse_dns_tcp(rec.payload) if tcp else parse_dns_message(rec.payload)
        if not message.questions:
            raise DnsParseError("no question")
        event = self._flow_base("dns", rec)
        event["query"], event["qtype"] = message.questions[0]
        event["response"] = message.is_response
        if message.is_response:
            event["rcode"] = message.rcode
            event["answers"] = [a._asdict() for a in message.answers]
            if not rec.egress:
                self._remember_named(event["sandbox"]["name"], message.answers)
        return event

    def _remember_named(self, sandbox: str, answers: list) -> None:
        for answer in answers[:64]:
            address = _canonical_address(answer.value) if answer.type in ("A", "AAAA") else None
            if address is None:
                continue
            key = (sandbox, address)
            self._named[key] = None
            self._named.move_to_end(key)
        while len(self._named) > self.max_named_addresses:
            self._named.popitem(last=False)

    def _flow_base(self, kind: str, rec: FlowRecord) -> dict:
        if rec.owner_known:
            event = self.envelope.about_process(kind, rec.hdr)
        else:  # a socket we did not see created (accepted, or older than the agent)
            event = self.envelope.base(kind, rec.hdr, "", None, None, False)
            mark_partial(event, "process")
            event["process"]["pid"] = None
            event["process"]["uid"] = None
        event["direction"] = "egress" if rec.egress else "ingress"
        event["protocol"] = protocol_name(rec.protocol)
        event["daddr"] = address_text(rec.daddr)
        event["dport"] = rec.dport
        event["sport"] = rec.sport
        event["flow_id"] = rec.sock_cookie
        return event


def _canonical_address(value: Optional[str]) -> Optional[str]:
    """An address as `address_text` writes it (inet_ntop), or None if it is not one."""
    if not value:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, value))
        except OSError:
            continue
    return None
