"""`watch --standalone`: no agent on the host, so the viewer starts its own.

The probes run in a child `ebpfguard run` on a private socket, not in the viewer's process:
the agent's loop owns its signals, and at thousands of events per second the agent and the
UI would otherwise compete for one interpreter lock. The child ends with the viewer.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

READY_TIMEOUT_S = 120


class AgentFailed(Exception):
    """The child agent exited before it was ready; the message holds its last words."""


@contextlib.contextmanager
def own_agent(extra_args: tuple[str, ...]) -> Iterator[str]:
    """Run an agent serving a private socket; yields the socket's path once it is ready."""
    with tempfile.TemporaryDirectory(prefix="ebpfguard-watch-") as workdir:
        sock = os.path.join(workdir, "events.sock")
        log_path = Path(workdir) / "agent.log"
        with open(log_path, "w") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "ebpfguard", "run", "--socket", sock, "--control-socket", "none",
                 "--output", os.devnull, *extra_args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _wait_ready(child, log_path)
            yield sock
        finally:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _wait_ready(child: subprocess.Popen, log_path: Path) -> None:
    print("ebpfguard: loading probes (a few seconds)...", file=sys.stderr, flush=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if "ready" in log_path.read_text().splitlines():
            return
        if child.poll() is not None:
            raise AgentFailed(log_path.read_text().strip()[-2000:] or f"agent exited with {child.returncode}")
        time.sleep(0.1)
    raise AgentFailed(f"the agent was not ready within {READY_TIMEOUT_S}s")
