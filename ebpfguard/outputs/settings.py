"""The `outputs:` section of the config: checked, then built into running deliveries.

An output is on when its destination is set (`url`, `address` or `file`); none is by default.
`check_outputs` finds every problem without side effects (config loading runs it, so a bad
key is an error naming its file and line); `build_outputs` makes the deliveries.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ebpfguard.detect.rulefile import SEVERITIES
from ebpfguard.outputs.alertmanager import AlertmanagerFormat, api_url, label_safe
from ebpfguard.outputs.delivery import Delivery, DiskSpool, MemorySpool, OutputCounters, Retry
from ebpfguard.outputs.falco import FalcoFormat, LineFile
from ebpfguard.outputs.httpsend import HeadersFileError, HttpPoster, Tls, read_headers_file
from ebpfguard.outputs.syslog import FACILITIES, SyslogAddress, SyslogFormat, SyslogSender
from ebpfguard.outputs.webhook import WebhookFormat

OUTPUTS = ("alertmanager", "falco", "syslog", "webhook")


class OutputConfigError(ValueError):
    """A bad output setting: `key` is its dotted name (outputs.webhook.url), for the message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"'{key}': {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Plan:
    """One output, checked: how to make its delivery."""

    name: str
    formatter: Callable[[], Any]
    sender: Callable[[], Callable[[bytes], None]]
    spool_dir: str
    spool_max_bytes: int
    queue_size: int
    retry: Retry


def _positive(settings: Mapping, name: str, key: str) -> None:
    value = settings[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise OutputConfigError(f"outputs.{name}.{key}", f"must be a positive number, not {value!r}")


def _common(settings: Mapping, name: str) -> None:
    for key in ("timeout_s", "queue_size", "retry_initial_s", "retry_max_s"):
        _positive(settings, name, key)
    if settings["min_severity"] not in SEVERITIES:
        raise OutputConfigError(f"outputs.{name}.min_severity", f"must be one of {', '.join(SEVERITIES)}")


def _tls(settings: Mapping, name: str) -> Tls:
    tls = Tls(settings["ca_file"] or "", settings["cert_file"] or "", settings["key_file"] or "")
    if tls.key_file and not tls.cert_file:
        raise OutputConfigError(f"outputs.{name}.key_file", "a key_file needs its cert_file")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path and not os.access(path, os.R_OK):
            raise OutputConfigError(f"outputs.{name}.{key}", f"cannot read {path}")
    try:
        tls.context()
    except (ssl.SSLError, OSError) as exc:
        raise OutputConfigError(f"outputs.{name}.cert_file" if tls.cert_file else f"outputs.{name}.ca_file",
                                f"not usable for TLS: {exc}") from None
    return tls


def _poster(settings: Mapping, name: str, url: str, headers: Optional[dict] = None) -> Callable[[], HttpPoster]:
    tls = _tls(settings, name)
    try:
        HttpPoster(url, settings["timeout_s"], tls, headers or {})
    except ValueError as exc:
        raise OutputConfigError(f"outputs.{name}.url", str(exc)) from None
    return lambda: HttpPoster(url, settings["timeout_s"], tls, headers or {})


def _spool(settings: Mapping, name: str) -> tuple[str, int]:
    _positive(settings, name, "spool_max_bytes")
    directory = settings["spool_dir"] or ""
    if directory and not os.path.isabs(directory):
        raise OutputConfigError(f"outputs.{name}.spool_dir", "must be an absolute path (or \"\" to keep the backlog in memory)")
    return (str(Path(directory) / name) if directory else "", int(settings["spool_max_bytes"]))


def _alertmanager(s: Mapping) -> Plan:
    labels = s["labels"] or {}
    if not isinstance(labels, dict):
        raise OutputConfigError("outputs.alertmanager.labels", "must be a mapping of label names to values")
    for key, value in labels.items():
        if not isinstance(key, str) or not label_safe(key):
            raise OutputConfigError("outputs.alertmanager.labels", f"'{key}' is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not __*)")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise OutputConfigError(f"outputs.alertmanager.labels", f"the value of '{key}' must be a string")
    for key in ("resend_interval_s", "resolve_after_s"):
        _positive(s, "alertmanager", key)
    spool_dir, spool_max = _spool(s, "alertmanager")
    return Plan("alertmanager",
                lambda: AlertmanagerFormat(s["min_severity"], {k: str(v) for k, v in labels.items()},
                                           s["resend_interval_s"], s["resolve_after_s"], s["generator_url"] or ""),
                _poster(s, "alertmanager", api_url(s["url"])), spool_dir, spool_max, s["queue_size"],
                Retry(s["retry_initial_s"], s["retry_max_s"]))


def _falco(s: Mapping) -> Plan:
    if s["url"] and s["file"]:
        raise OutputConfigError("outputs.falco", "set `url` (Falcosidekick) or `file` (JSON lines), not both")
    if s["file"]:
        if not os.path.isabs(s["file"]):
            raise OutputConfigError("outputs.falco.file", "must be an absolute path")
        sender: Callable = lambda: LineFile(s["file"])
    else:
        sender = _poster(s, "falco", s["url"])
    spool_dir, spool_max = _spool(s, "falco")
    line = bool(s["file"])
    return Plan("falco", lambda: FalcoFormat(s["min_severity"], s["source"], line), sender, spool_dir, spool_max,
                s["queue_size"], Retry(s["retry_initial_s"], s["retry_max_s"]))


def _syslog(s: Mapping) -> Plan:
    try:
        address = SyslogAddress.parse(s["address"])
    except ValueError as exc:
        raise OutputConfigError("outputs.syslog.address", str(exc)) from None
    if s["facility"] not in FACILITIES:
        raise OutputConfigError("outputs.syslog.facility", f"must be one of {', '.join(FACILITIES)}")
    if not isinstance(s["max_bytes"], int) or s["max_bytes"] < 480:
        raise OutputConfigError("outputs.syslog.max_bytes", "must be an integer of at least 480 (RFC 5424)")
    return Plan("syslog", lambda: SyslogFormat(s["min_severity"], s["facility"], s["app_name"], s["max_bytes"]),
                lambda: SyslogSender(address, s["timeout_s"]), "", 0, s["queue_size"],
                Retry(s["retry_initial_s"], s["retry_max_s"]))


def _webhook(s: Mapping) -> Plan:
    headers = {}
    if s["headers_file"]:
        try:
            headers = read_headers_file(s["headers_file"])
        except HeadersFileError as exc:
            raise OutputConfigError("outputs.webhook.headers_file", str(exc)) from None
    spool_dir, spool_max = _spool(s, "webhook")
    return Plan("webhook", lambda: WebhookFormat(s["min_severity"]), _poster(s, "webhook", s["url"], headers),
                spool_dir, spool_max, s["queue_size"], Retry(s["retry_initial_s"], s["retry_max_s"]))


_DESTINATION = {"alertmanager": ("url",), "falco": ("url", "file"), "syslog": ("address",), "webhook": ("url",)}
_PLANS = {"alertmanager": _alertmanager, "falco": _falco, "syslog": _syslog, "webhook": _webhook}


def plan_outputs(section: Optional[Mapping]) -> list[Plan]:
    """The outputs that are on, checked; raises OutputConfigError at the first problem."""
    plans = []
    for name in OUTPUTS:
        settings = (section or {}).get(name) or {}
        if not any(settings.get(key) for key in _DESTINATION[name]):
            continue
        _common(settings, name)
        plans.append(_PLANS[name](settings))
    return plans


def check_outputs(section: Optional[Mapping]) -> None:
    """Raise OutputConfigError for the first bad setting of an output that is on."""
    plan_outputs(section)


def build_outputs(section: Optional[Mapping], warn: Callable[[str, str], None]) -> list[Delivery]:
    """A delivery per output that is on, not yet started. `warn(output, message)` reports
    delivery problems (rate-limited by the caller)."""
    deliveries = []
    for plan in plan_outputs(section):
        backlog = DiskSpool(Path(plan.spool_dir), plan.spool_max_bytes) if plan.spool_dir else MemorySpool(plan.queue_size)
        deliveries.append(Delivery(
            plan.name, plan.formatter(), plan.sender(), queue_size=plan.queue_size, backlog=backlog,
            retry=plan.retry, counters=OutputCounters(plan.name),
            warn=lambda message, name=plan.name: warn(name, message)))
    return deliveries
