"""miner.pool: a process asks for a known mining pool by name.

Encrypted stratum (`stratum+ssl`) and Stratum V2 hide the protocol from `miner.stratum`, but
the pool's name still shows: in the DNS query, in the TLS ClientHello's SNI, and (through the
DNS answers the sandbox received) behind the address it connects to. Names are matched
against the `pool_domains` lists as suffixes on label boundaries. A pool port (3333, 14444...)
is weak alone, since any service may use it, so it never alerts by itself; with a name match
it raises the severity to high.

`dns` events: `query` (and `qtype`) for the question; a response also carries `answers`
(`[{"name", "type", "ttl", "value"}]`, A/AAAA values are addresses, CNAME values names):
the query and CNAME names are matched, and the addresses are learned for later connects.
One alert per pool name per process, and one more if a later event raises its severity.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from typing import Iterable, Optional

from ebpfguard.detect.engine import event_time_ns
from ebpfguard.detect.execinfo import sandbox_name
from ebpfguard.detect.pool_names import DomainList, ObservedNames, answers_from_records, normalize_address
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector
from ebpfguard.enrich.wire.tls import client_hello_sni

WITH_PORT_SEVERITY = "high"


@detector("miner.pool", kinds=("dns", "flow", "connect"))
class MinerPool(Detector):
    """Pool names from DNS questions and answers, TLS SNI, and connects to learned addresses."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        params = ctx.params
        self.domains = DomainList(str(domain) for domain in params["pool_domains"])
        if not self.domains.domains:
            raise ValueError("pool_domains is empty")
        self.ports = frozenset(int(port) for port in params["pool_ports"])
        self.max_tracked = int(params["max_tracked"])
        self.observed = ObservedNames(max_addresses=self.max_tracked,
                                      min_ttl_s=int(params["min_ttl_s"]),
                                      max_ttl_s=int(params["max_ttl_s"]))
        # (sandbox, pid, pool name) -> whether its alert had a pool port; most recent last.
        self.alerted: OrderedDict[tuple, bool] = OrderedDict()

    def on_event(self, event: Event) -> Iterable[Finding]:
        kind = event.get("kind")
        if kind == "dns":
            names, source = self.dns_names(event), "dns"
        elif kind == "flow":
            sni = flow_sni(event)
            names, source = ([sni] if sni else []), "sni"
        else:
            names, source = self.connect_names(event), "connect"
        for name in names:
            matched = self.domains.match(name)
            if matched is not None:
                finding = self.finding(event, name, matched, source)
                return [finding] if self.is_news(event, name, finding.severity is not None) else []
        return []

    def dns_names(self, event: Event) -> list[str]:
        """The question and the CNAME names of a `dns` event; its addresses are learned."""
        answers = answers_from_records(event.get("answers"))
        if answers:
            self.observed.learn(answers, event_time_ns(event.get("time")), scope=sandbox_name(event))
        names = [event["query"]] if isinstance(event.get("query"), str) else []
        names += [name for answer in answers if answer.type == "CNAME"
                  for name in (answer.name, answer.value) if name]
        return names

    def connect_names(self, event: Event) -> list[str]:
        """Names this sandbox's DNS answers gave the connect's destination."""
        address = normalize_address(event.get("daddr"))
        scope = sandbox_name(event)
        # Most connects go to addresses no pool answer named: skip parsing their time.
        if address is None or not self.observed.names_for(address, scope=scope):
            return []
        return self.observed.names_for(address, event_time_ns(event.get("time")), scope=scope)

    def finding(self, event: Event, name: str, matched: str, source: str) -> Finding:
        port = event.get("dport") if source != "dns" else None
        port_hint = port if isinstance(port, int) and port in self.ports else None
        where = {"dns": "DNS query for", "sni": "TLS server name", "connect": "connect to"}[source]
        destination = f" ({event.get('daddr')} port {port})" if port is not None else ""
        return Finding(
            summary=f"{where} mining pool {name}{destination}: listed as {matched}"
                    + (f", on pool port {port_hint}" if port_hint else ""),
            evidence={"matched": matched, "name": name, "source": source, "port_hint": port_hint,
                      "daddr": event.get("daddr") if source != "dns" else None},
            severity=WITH_PORT_SEVERITY if port_hint else None,
        )

    def is_news(self, event: Event, name: str, with_port: bool) -> bool:
        """Whether this process has not alerted on this name yet, or did without a pool port.

        Events without a pid (minimal replay events) are never de-duplicated.
        """
        pid = (event.get("process") or {}).get("pid")
        if pid is None:
            return True
        key = (sandbox_name(event), pid, name)
        before = self.alerted.get(key)
        if before is not None and (before or not with_port):
            self.alerted.move_to_end(key)
            return False
        self.alerted[key] = with_port
        self.alerted.move_to_end(key)
        while len(self.alerted) > self.max_tracked:
            self.alerted.popitem(last=False)
        return True


def flow_sni(event: Event) -> Optional[str]:
    """The flow's `sni`, or the ClientHello's in its payload when a recorded event has none."""
    sni = event.get("sni")
    if isinstance(sni, str) and sni:
        return sni
    payload = event.get("payload_b64")
    if not isinstance(payload, str):
        return None
    try:
        return client_hello_sni(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        return None

