"""What an exec ran, as detectors read it: computed once per event, each caller its own copy."""

from ebpfguard.detect.execinfo import exec_argv, program_and_args


def test_each_event_gets_its_own_argv_and_program_and_callers_cannot_spoil_them():
    first = {"kind": "exec", "filename": "/usr/bin/busybox", "process": {"argv": ["busybox", "nc", "-e", "/bin/sh"]}}
    second = {"kind": "exec", "filename": "/usr/bin/ssh", "process": {"argv": ["ssh", "-R", "8080:x:80", "h"]}}
    argv = exec_argv(first)
    argv.append("spoiled")
    name, args = program_and_args(first)
    args.append("spoiled")
    assert exec_argv(first) == ["busybox", "nc", "-e", "/bin/sh"]
    assert program_and_args(first) == ("nc", ["-e", "/bin/sh"])
    assert program_and_args(second) == ("ssh", ["-R", "8080:x:80", "h"])
    assert exec_argv(second) == ["ssh", "-R", "8080:x:80", "h"]
