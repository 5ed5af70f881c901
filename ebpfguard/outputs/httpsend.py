"""POSTing payloads over HTTP(S), with timeouts, TLS settings and secret headers.

The standard library's http.client does all of it (TLS through an ssl.SSLContext: CA file,
client certificate and key), so no dependency is added for four small outputs. Header values
may be secrets (a bearer token): they are never put in an error message, a log line or an
event, and neither are credentials written in the URL.
"""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ebpfguard.outputs.delivery import PermanentError, TransientError

# RFC 9110 token characters, for header names read from a file.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Refused again later may succeed: timeout, too early, rate limited.
_RETRYABLE_4XX = {408, 425, 429}
_MAX_ERROR_BODY = 200


class HeadersFileError(ValueError):
    """A headers file that cannot be used; the message names the file and line, never a value."""


def read_headers_file(path: str) -> dict[str, str]:
    """`Name: value` lines (blank lines and `#` comments skipped) -> headers."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadersFileError(f"{path}: cannot read: {type(exc).__name__}") from None
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN.match(name):
            raise HeadersFileError(f"{path}:{number}: not a 'Name: value' header line")
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            raise HeadersFileError(f"{path}:{number}: header '{name}' has a control character in its value")
        headers[name] = value
    return headers


def redact_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Tls:
    """TLS for an https:// receiver: a CA bundle to trust (default: the system's) and a client
    certificate and key for mutual TLS."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file or None)
        return context


@dataclass
class HttpPoster:
    """POSTs each payload to one URL; raises TransientError or PermanentError when it fails."""

    url: str
    timeout_s: float
    tls: Tls = field(default_factory=Tls)
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{redact_url(self.url)}' is not an http:// or https:// URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._context = self.tls.context() if self._https else None
        self._headers = {"Content-Type": self.content_type, "User-Agent": "ebpfguard"}
        if parts.username is not None:
            userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        self._headers.update(self.headers)
        self.where = redact_url(self.url)

    def _scrub(self, text: str) -> str:
        """A receiver's answer with our header values blanked: some echo the request back."""
        for value in self._headers.values():
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s, context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)

    def __call__(self, payload: bytes) -> None:
        # A connection per payload: alerts are rare, and a kept-alive socket that the receiver
        # closed meanwhile would turn every first send after a pause into a failure.
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=payload, headers=self._headers)
            response = conn.getresponse()
            body = response.read(4096)
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"{self.where}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if 200 <= response.status < 300:
            return
        detail = self._scrub(body[:_MAX_ERROR_BODY].decode("utf-8", "replace").strip())
        message = f"{self.where}: HTTP {response.status} {detail!r}"
        if 400 <= response.status < 500 and response.status not in _RETRYABLE_4XX:
            raise PermanentError(message)
        raise TransientError(message)
