"""The contract between rules (YAML data) and detectors (Python logic).

A rule in a rules file names a detector by its rule id. A detector is a class registered with
`@detector(rule_id, kinds=...)`; the engine makes one instance per loaded rule (so a detector
may keep state, bounded) and calls `on_event` for every event of the listed kinds. It yields
`Finding`s; the engine turns them into `alert` events (severity, tags, de-duplication,
allowlists), so detectors stay small and pure: event in, findings out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional

from ebpfguard.detect.filereader import ReadResult

Event = Mapping[str, Any]

# (event, path as the process named it) -> what could be read of the file, or why nothing
# (ebpfguard.detect.filereader). Only the live agent provides one: replay reads no host files.
ReadProcessFile = Callable[[Event, str], "ReadResult"]


@dataclass(frozen=True)
class Finding:
    """Why one event matches a rule."""

    summary: str
    evidence: Mapping[str, Any]
    severity: Optional[str] = None  # None: the rule's declared severity
    # What makes a later finding of the same process a repeat of this one, for findings whose
    # evidence changes each time (a GPU's memory, poll to poll); None: the evidence itself.
    same_as: Optional[tuple] = None


@dataclass(frozen=True)
class RuleContext:
    """What a detector instance gets from its rule and its environment."""

    rule_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    lists: Mapping[str, tuple] = field(default_factory=dict)
    read_file: Optional[ReadProcessFile] = None


class Detector:
    """Base class of registered detectors."""

    rule_id: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    def __init__(self, ctx: RuleContext) -> None:
        self.ctx = ctx

    def on_event(self, event: Event) -> Iterable[Finding]:
        raise NotImplementedError

    def may_read_files(self, event: Event) -> bool:
        """Whether `on_event` may read a file of the event's process for this event (through
        `ctx.read_file`): such a read can wait on what the sandbox controls, so the agent
        detects that event off its main loop. Say True when unsure."""
        return False

    def poll(self) -> Iterable[tuple[Event, Finding]]:
        """Findings that came later than their event (work done off the hot path), each with
        the event it is about; the engine calls this between events. Most detectors have none."""
        return ()

    def late_pending(self) -> bool:
        """Whether `poll` has work that waits on time rather than on a wake: the agent then
        wakes whoever polls at each housekeeping until this says no. Called from the agent's
        main loop, whichever thread detects, so it may only read. Most detectors have none."""
        return False

    def wake_on_late(self, wake: Callable[[], None]) -> None:
        """A detector with `poll` calls `wake` (from any thread) when poll has something new,
        so that nobody needs to ask it over and over."""

    def see_processes(self, image_holder: Callable[[int], Optional[int]]) -> None:
        """`image_holder(pid)` names the live process running the image `pid` exec'd: `pid`
        itself, or the daemon it forked before it exited; None once the agent saw them all
        exit. A detector that would open the process's files under /proc asks it first."""


DETECTORS: dict[str, type[Detector]] = {}


def detector(rule_id: str, kinds: tuple[str, ...]) -> Callable[[type[Detector]], type[Detector]]:
    """Register a Detector class under a rule id, for events of the given kinds."""

    def register(cls: type[Detector]) -> type[Detector]:
        if rule_id in DETECTORS:
            raise ValueError(f"detector {rule_id!r} registered twice")
        cls.rule_id = rule_id
        cls.kinds = kinds
        DETECTORS[rule_id] = cls
        return cls

    return register
