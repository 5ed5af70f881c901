"""A real OpenSSH server on a loopback port, with a key the test makes, for tunnel tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sshd:
    port: int
    client_key: Path
    proc: subprocess.Popen

    def client_args(self) -> list[str]:
        """Options every test client needs: our key, no prompts, no host-key bookkeeping."""
        return ["-i", str(self.client_key), "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(workdir: Path) -> Sshd:
    """sshd listening on 127.0.0.1:<free port>, accepting only a freshly made key for root."""
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = workdir / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    os.chmod(authorized, 0o600)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no", "AllowTcpForwarding yes", "GatewayPorts no",
        f"PidFile {workdir / 'sshd.pid'}", "",
    ]))
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stderr=open(workdir / "sshd.log", "w"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Sshd(port, client_key, proc)
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    raise AssertionError(f"sshd did not start: {(workdir / 'sshd.log').read_text()}")
