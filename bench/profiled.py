"""`ebpfguard run` under cProfile: `python -m bench.profiled PROFILE_OUT run ARGS...`.

`python -m cProfile` writes its profile at interpreter exit, and the agent leaves with
os._exit once everything is detached and flushed (SIGTERM must end it within a second), so
no profile would ever be written. Here os._exit writes the profile first. Like cProfile's own
command line, this profiles the main thread: the drain loop, decoding, enrichment, output.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import sys


def main(argv: list[str]) -> None:
    out, args = argv[0], argv[1:]
    profile = cProfile.Profile()
    real_exit = os._exit

    def exit_after_dump(code: int) -> None:
        profile.disable()
        profile.dump_stats(out)
        real_exit(code)

    os._exit = exit_after_dump  # type: ignore[assignment]
    sys.argv = ["ebpfguard", *args]
    profile.enable()
    try:
        runpy.run_module("ebpfguard", run_name="__main__", alter_sys=True)
    finally:  # an exit other than os._exit (a usage error): the profile all the same
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main(sys.argv[1:])
