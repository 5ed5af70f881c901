"""The runner operations of the control socket: a sandbox's report, the sandboxes one may ask
about, and a live stream of one sandbox's alerts and actions (docs/runners.md)."""

from __future__ import annotations

from ebpfguard.control import ControlError, ControlServer, Subscription
from ebpfguard.outputs.history import SandboxHistory
from ebpfguard.outputs.report import build_report
from ebpfguard.outputs.runner_access import Peer

STREAMED_KINDS = frozenset({"alert", "action"})
MAX_NAME_CHARS = 4096


def _sandbox_asked(control: ControlServer, args: dict, peer: Peer) -> str:
    name = args.get("sandbox")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ControlError('this operation needs {"sandbox": NAME}', code="bad_request")
    if not control.access.may_ask(peer, name):
        raise ControlError(f"uid {peer.uid} may not ask about sandbox {name!r}", code="forbidden")
    return name


def register_runner_operations(control: ControlServer, history: SandboxHistory) -> None:
    """`report`, `sandboxes` and `watch` on `control`, answered from `history`."""

    def report(args: dict, peer: Peer) -> dict:
        name = _sandbox_asked(control, args, peer)
        record = history.get(name)
        if record is None:
            raise ControlError(f"no history of sandbox {name!r} (never seen, or expired)", code="unknown_sandbox")
        return build_report(record)

    def sandboxes(_args: dict, peer: Peer) -> list[str]:
        return [name for name in history.names() if control.access.may_ask(peer, name)]

    def watch(args: dict, peer: Peer) -> Subscription:
        name = _sandbox_asked(control, args, peer)  # it may not exist yet: a runner starts watching first

        def wants(line: dict) -> bool:
            return line.get("kind") in STREAMED_KINDS and (line.get("sandbox") or {}).get("name") == name

        return Subscription({"watching": name}, wants)

    control.handle("report", report, root_only=False)
    control.handle("sandboxes", sandboxes, root_only=False)
    control.handle("watch", watch, root_only=False)
