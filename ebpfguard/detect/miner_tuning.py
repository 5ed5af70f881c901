"""`miner.tuning`: a sandbox tuning the CPU the way miners do: MSRs and huge pages.

RandomX miners (XMRig's "MSR mod", its `randomx_boost.sh`) load the `msr` module with writes
allowed, write model-specific registers to turn off hardware prefetchers, and reserve huge
pages for their dataset. From a sandbox none of this is what a training job does: it may read
its huge page settings, it does not set the host's. Seen two ways:

* exec, by argument grammar, in every command an exec would run (wrappers, `sh -c`):
  `modprobe msr [allow_writes=on]`, `insmod msr.ko`, `wrmsr ...`, `sysctl [-w]
  vm.nr_hugepages=N`, and shell redirections or `tee` into the settings files below;
* open, from the open probe (which passes only these in the kernel): any open of
  `/dev/cpu/N/msr`, and opens for writing of `/sys/module/msr/parameters/allow_writes`,
  `/proc/sys/vm/nr_hugepages` and the huge page pools under `/sys/kernel/mm/hugepages/` and
  `/sys/devices/system/node/`. A failed open (a read-only /sys) is still the attempt.

The host (admins running `modprobe msr`, tuned setting huge pages) never alerts here.
"""

from __future__ import annotations

from typing import Iterable, Optional

import re2

from ebpfguard.detect.cmdline import command_list, program_name, shell_script
from ebpfguard.detect.execinfo import NoFindings, exec_argv, exec_key, exec_succeeded, sandbox_name
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector

O_ACCMODE = 3
MSR_DEVICE = re2.compile(r"/dev/cpu/[^/]+/msr")
SETTINGS = re2.compile(
    r"/sys/module/msr/parameters/allow_writes|/proc/sys/vm/nr_(overcommit_)?hugepages"
    r"|/sys/kernel/mm/hugepages/\S*|/sys/devices/system/node/[^/\s]+/hugepages/\S*"
)
# `> FILE`, `>> FILE`, `tee [-a] FILE`: a script writing a settings file.
SCRIPT_WRITE = re2.compile(
    r"(>>?|\btee\s+(-a\s+)?)\s*(/sys/module/msr/parameters/allow_writes|/proc/sys/vm/nr_(overcommit_)?hugepages"
    r"|/sys/kernel/mm/hugepages/\S+|/sys/devices/system/node/[^/\s]+/hugepages/\S+)"
)
SYSCTL_KEYS = ("vm.nr_hugepages", "vm/nr_hugepages", "vm.nr_overcommit_hugepages")


@detector("miner.tuning", kinds=("exec", "open"))
class MinerTuning(Detector):
    """MSR and huge page tuning from a sandbox, by exec grammar and by open."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        self.module_loaders = frozenset(ctx.params.get("module_loaders", ()))
        self.msr_writers = frozenset(ctx.params.get("msr_writers", ()))
        self.sysctl = frozenset(ctx.params.get("sysctl", ()))
        self._quiet = NoFindings()

    def on_event(self, event: Event) -> Iterable[Finding]:
        if sandbox_name(event) == "host":
            return []
        if event.get("kind") == "open":
            return self.on_open(event)
        if not exec_succeeded(event):
            return []
        return self._quiet.findings(exec_key(event), lambda: self._exec_findings(event))

    def _exec_findings(self, event: Event) -> list[Finding]:
        for command in command_list(exec_argv(event))[:16]:
            found = self.judge_command(list(command.argv))
            if found is not None:
                action, target = found
                return [Finding(f"miner CPU tuning in a sandbox: {action} ({target})",
                                {"action": action, "target": target, "source": command.source},
                                severity=_severity(action, target))]
        return []

    def judge_command(self, argv: list[str]) -> Optional[tuple[str, str]]:
        """(action, target) when one command tunes MSRs or huge pages."""
        name = program_name(argv[0]) if argv else ""
        args = argv[1:]
        words = [a for a in args if not a.startswith("-")]
        if name in self.module_loaders and not {"-r", "--remove"} & set(args):
            # modprobe names the module, insmod its file (`/lib/modules/.../msr.ko[.xz]`).
            module = next((w for w in words if w.rsplit("/", 1)[-1].split(".", 1)[0] == "msr"), None)
            if module is not None:
                return "load_msr_module", " ".join(args)
        if name in self.msr_writers and words:
            return "write_msr", " ".join(args)
        if name in self.sysctl:
            assignment = next((w for w in words if w.startswith(SYSCTL_KEYS) and "=" in w), None)
            if assignment is not None:
                return "set_huge_pages", assignment
        script = shell_script(argv)
        if script is not None:
            written = SCRIPT_WRITE.search(script[:65536])
            if written is not None:
                return "write_setting", written.group(3)
        return None

    def on_open(self, event: Event) -> list[Finding]:
        path = str(event.get("filename") or "")
        flags = event.get("flags") or 0
        retval = event.get("retval", 0)
        tried = "" if not isinstance(retval, int) or retval >= 0 else "tried to "
        if MSR_DEVICE.fullmatch(path):
            return [Finding(f"sandbox {tried}open a CPU's MSR device {path}",
                            {"action": "open_msr_device", "target": path, "source": "open"}, severity="high")]
        if isinstance(flags, int) and flags & O_ACCMODE and SETTINGS.match(path):
            return [Finding(f"sandbox {tried}open {path} for writing",
                            {"action": "write_setting", "target": path, "source": "open"},
                            severity=_severity("write_setting", path))]
        return []


def _severity(action: str, target: str) -> str:
    """MSR access is high (it reprograms the host's CPUs); huge pages alone medium."""
    if action == "set_huge_pages" or (action == "write_setting" and "msr" not in target):
        return "medium"
    return "high"
