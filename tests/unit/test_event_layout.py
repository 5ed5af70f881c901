"""bpf/events.h and ebpfguard/kernel/events.py must describe the same bytes."""

import shutil
import subprocess

import pytest

from ebpfguard.kernel import events

PRELUDE = """
#include <stddef.h>
#include <stdio.h>
typedef unsigned long long __u64; typedef long long __s64; typedef unsigned int __u32; typedef int __s32;
typedef unsigned short __u16; typedef unsigned char __u8;
#include "events.h"
int main(void) {
"""


@pytest.fixture(scope="module")
def compiled_layouts(tmp_path_factory):
    """{struct: {"sizeof": n, field: offset}} as the C compiler lays the header out."""
    if shutil.which("cc") is None:
        pytest.fail("a C compiler is needed to check the event layouts (apt install gcc)")
    lines = [PRELUDE]
    for layout in events.LAYOUTS:
        lines.append(f'printf("{layout.name} sizeof %zu\\n", sizeof(struct {layout.name}));')
        for field, _ in layout.fields:
            lines.append(
                f'printf("{layout.name} {field} %zu\\n", offsetof(struct {layout.name}, {field}));'
            )
    lines.append("return 0; }")
    tmp = tmp_path_factory.mktemp("layout")
    src, exe = tmp / "layout.c", tmp / "layout"
    src.write_text("\n".join(lines))
    subprocess.run(["cc", "-I", str(events.BPF_DIR), "-o", str(exe), str(src)], check=True)
    out: dict = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines():
        struct_name, field, value = line.split()
        out.setdefault(struct_name, {})[field] = int(value)
    return out


@pytest.mark.parametrize("layout", events.LAYOUTS, ids=lambda l: l.name)
def test_python_layout_matches_the_c_header(layout, compiled_layouts):
    c = compiled_layouts[layout.name]
    assert layout.size == c["sizeof"]
    assert layout.offsets() == {field: c[field] for field, _ in layout.fields}


def test_constants_are_read_from_the_header():
    assert events.C["ARGV_MAX_ARGS"] >= 32
    assert events.C["ARGV_ARG_READ"] > 256
    assert events.C["ARGV_BUF_LEN"] >= 32 * 256


def test_event_kinds_are_all_distinct():
    kinds = {name: value for name, value in events.C.items() if name.startswith("EVENT_")}
    assert {"EVENT_EXEC", "EVENT_FORK", "EVENT_EXIT"} <= set(kinds)
    assert len(set(kinds.values())) == len(kinds), kinds
