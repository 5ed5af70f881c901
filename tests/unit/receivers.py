"""Real receivers for the output tests, on loopback: an HTTP server, Debian's Alertmanager and
Debian's rsyslog (in the foreground, with a temp config, never the host's syslog)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

import pytest

START_TIMEOUT_S = 60


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        pytest.fail(f"{binary} is not installed: run scripts/setup.sh --test")
    return path


class HttpReceiver:
    """An HTTP server recording each POST (path, headers, body); it can be taken down and brought
    back on the same port, and made to answer with another status."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.requests: list[tuple[str, dict, bytes]] = []
        self.status = 200
        self.answer = b"ok"
        self._server: Optional[ThreadingHTTPServer] = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [body for _, _, body in self.requests]

    def up(self, server_class: type = ThreadingHTTPServer, wrap: Optional[Callable] = None) -> "HttpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *args) -> None:
                pass

        server_class.allow_reuse_address = True
        self._server = server_class(("127.0.0.1", self.port), Handler)
        if wrap is not None:
            self._server.socket = wrap(self._server.socket)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Alertmanager:
    """Debian's prometheus-alertmanager on loopback with a temp config and storage; its
    notifications (firing and resolved) go to `webhook_url`, unless `config` is given."""

    def __init__(self, workdir: Path, webhook_url: str, config: Optional[dict] = None, port: int = 0) -> None:
        binary = need("prometheus-alertmanager")
        self.port = port or free_port()
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(json.dumps(config or {  # JSON is YAML
            "route": {"receiver": "hook", "group_by": ["alertname", "sandbox"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
        }))
        self.log = open(workdir / "alertmanager.log", "a")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}", f"--storage.path={workdir / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._ready, START_TIMEOUT_S, f"alertmanager ready ({Path(self.log.name).read_text()[-2000:]})", 0.2)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, Path(self.log.name).read_text()
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def alerts(self, **matchers: str) -> list[dict]:
        """Alerts Alertmanager holds now (active, suppressed or not yet processed)."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in matchers.items()])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Rsyslog:
    """Debian's rsyslogd in the foreground with only our config: TCP and UDP listeners on
    loopback and a local datagram socket in `workdir` (never /dev/log), writing each message's
    header fields, structured data and text to a file."""

    TEMPLATE = "%syslogseverity%|%syslogfacility%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\\n"

    def __init__(self, workdir: Path, tcp_port: int = 0) -> None:
        binary = need("rsyslogd")
        self.tcp_port = tcp_port or free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.socket_path = workdir / "log.sock"
        self.output = workdir / "received.log"
        spool = workdir / "rsyslog-work"
        spool.mkdir()
        config = workdir / "rsyslog.conf"
        config.write_text(f"""
global(workDirectory="{spool}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
module(load="imtcp")
module(load="imudp")
template(name="fields" type="string" string="{self.TEMPLATE}")
ruleset(name="ours") {{ action(type="omfile" file="{self.output}" template="fields") }}
input(type="imtcp" port="{self.tcp_port}" address="127.0.0.1" ruleset="ours")
input(type="imudp" port="{self.udp_port}" address="127.0.0.1" ruleset="ours")
input(type="imuxsock" socket="{self.socket_path}" ruleset="ours" useSpecialParser="off" parseHostname="on")
""")
        self.log = open(workdir / "rsyslog.stderr", "w")
        self.proc = subprocess.Popen([binary, "-n", "-f", str(config), "-i", str(workdir / "rsyslog.pid")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._ready, START_TIMEOUT_S, "rsyslog listening", 0.1)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, Path(self.log.name).read_text()
        if not self.socket_path.exists():
            return False
        try:
            socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1).close()
        except OSError:
            return False
        return True

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
