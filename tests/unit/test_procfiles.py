"""read_process_file against a fake /proc tree: relative to cwd, absolute under root, safely."""

from __future__ import annotations

import os

import pytest

from ebpfguard.detect.procfiles import read_process_file


@pytest.fixture
def proc(tmp_path):
    root, cwd = tmp_path / "proc" / "42" / "root", tmp_path / "proc" / "42" / "root" / "work"
    cwd.mkdir(parents=True)
    os.symlink(cwd, tmp_path / "proc" / "42" / "cwd")
    (cwd / "config.json").write_text('{"pools": []}')
    (root / "etc").mkdir()
    (root / "etc" / "miner.json").write_text("absolute")
    (tmp_path / "host-secret").write_text("secret")
    return tmp_path


EVENT = {"process": {"pid": 42}}


def read(proc, path, **kwargs):
    return read_process_file(EVENT, path, proc_root=str(proc / "proc"), **kwargs)


def test_relative_path_is_read_from_the_process_cwd(proc):
    assert read(proc, "config.json") == b'{"pools": []}'
    assert read(proc, "./config.json") == b'{"pools": []}'


def test_absolute_path_is_read_under_the_process_root(proc):
    assert read(proc, "/etc/miner.json") == b"absolute"


def test_reads_are_bounded(proc):
    assert read(proc, "config.json", max_bytes=4) == b'{"po'


def test_symlinks_and_dotdot_cannot_reach_the_host(proc):
    os.symlink(proc / "host-secret", proc / "proc" / "42" / "root" / "work" / "link.json")
    assert read(proc, "link.json") is None
    assert read(proc, "../../../../host-secret") is None


def test_missing_files_fifos_and_unknown_pids_give_none(proc):
    os.mkfifo(proc / "proc" / "42" / "root" / "work" / "pipe")
    assert read(proc, "pipe") is None
    assert read(proc, "absent.json") is None
    assert read(proc, "/etc") is None
    assert read_process_file({"process": {"pid": 43}}, "config.json", proc_root=str(proc / "proc")) is None
    assert read_process_file({"process": {}}, "config.json", proc_root=str(proc / "proc")) is None
    assert read(proc, "bad\0name") is None
