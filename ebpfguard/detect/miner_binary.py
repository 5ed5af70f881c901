"""`miner.binary`: a miner known by the executable's content, whatever its name and arguments.

A renamed miner started with no arguments (its pool and wallet compiled in, or in a config
file under any name) gives nothing away in its command line; its executable still carries
the stratum methods, pool URL schemes, hashing engines and banners of a miner. Each exec
(live agent only: replay reads no host files) is handed to an `ExecutableScanner`
(exescan.py) that runs YARA rules (`miner_yara_files`) over the file's first `max_scan_bytes`
on a worker thread, and checks its SHA-256 against `miner_release_sha256`. The alert comes
when the verdict does, through `poll()`, carrying the exec event that started it; a file
already seen (same device, inode, size and mtime) is answered from the cache. A process gone
before its exec reaches detection is scanned through the child it forked, which runs the same
image (a daemon: XMRig's `--background` forks and exits at once; ProcessTable.image_holder).
"""

from __future__ import annotations

import importlib.resources
import os
from typing import Callable, Iterable, Optional

from ebpfguard.detect.execinfo import exec_succeeded
from ebpfguard.detect.exescan import ExecutableScanner, ScanVerdict, compile_rules
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector


def rules_path(name: str) -> str:
    """A YARA file named in the rules: absolute as given, else one shipped beside the YAML."""
    if os.path.isabs(name):
        return name
    return str(importlib.resources.files("ebpfguard").joinpath("rules", name))


@detector("miner.binary", kinds=("exec",))
class MinerBinary(Detector):
    """Scans each exec'd file off the hot path; alerts when its verdict says miner."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        params = ctx.params
        hashes = tuple(str(h).lower() for h in params.get("known_sha256", ()))
        bad = [h for h in hashes if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)]
        if bad:
            raise ValueError(f"known_sha256: not a SHA-256 hex digest: {bad[0]!r}")
        limits = {name: int(params[name]) for name in ("max_scan_bytes", "scan_timeout_s", "cache_entries", "queue_size")}
        if min(limits.values()) < 1:
            raise ValueError("max_scan_bytes, scan_timeout_s, cache_entries and queue_size must be at least 1")
        self.scanner: Optional[ExecutableScanner] = None
        if ctx.read_file is not None:  # the live agent; replay never reads host files
            self.scanner = ExecutableScanner(
                compile_rules(rules_path(str(name)) for name in params["yara_files"]), hashes,
                max_bytes=limits["max_scan_bytes"], timeout_s=limits["scan_timeout_s"],
                cache_entries=limits["cache_entries"], queue_size=limits["queue_size"],
            )
        else:
            compile_rules(rules_path(str(name)) for name in params["yara_files"])  # lint: they must build

    def on_event(self, event: Event) -> Iterable[Finding]:
        if self.scanner is not None and exec_succeeded(event):
            self.scanner.submit(event)
        return ()

    def wake_on_late(self, wake: Callable[[], None]) -> None:
        if self.scanner is not None:
            self.scanner.on_result = wake

    def see_processes(self, image_holder: Callable[[int], Optional[int]]) -> None:
        if self.scanner is not None:
            self.scanner.image_holder = image_holder

    def late_pending(self) -> bool:
        return self.scanner is not None and self.scanner.awaits_retry()

    def poll(self) -> Iterable[tuple[Event, Finding]]:
        """Findings for the scans finished since the last call, each with its exec event."""
        if self.scanner is None:
            return []
        self.scanner.retry_gone()
        return [(event, finding(event, verdict, self._daemon_of(event)))
                for event, verdict in self.scanner.results() if verdict.is_miner]

    def _daemon_of(self, event: Event) -> Optional[int]:
        """The child still running the exec's image when the exec'd process is gone."""
        assert self.scanner is not None
        running = self.scanner.running_pid(event)
        return None if running == (event.get("process") or {}).get("pid") else running


def finding(event: Event, verdict: ScanVerdict, daemon_pid: Optional[int] = None) -> Finding:
    """The alert for a miner verdict on an exec's executable; `daemon_pid`: the child that
    runs it on, when the exec'd process forked and exited (a daemon)."""
    process = event.get("process") or {}
    path = process.get("exe") or event.get("filename") or "?"
    why = ", ".join(verdict.rules) or "a known miner release (SHA-256)"
    evidence = {
        "path": path,
        "yara_rules": list(verdict.rules),
        "sha256": verdict.sha256,
        "known_release": verdict.known_release,
        "scanned_bytes": verdict.scanned_bytes,
        "size": verdict.size,
    }
    if daemon_pid is not None:
        evidence["daemon_pid"] = daemon_pid
    return Finding(summary=f"miner executable started: {path} ({why})", evidence=evidence)
