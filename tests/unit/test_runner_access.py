"""Who may ask the agent about which sandbox: root, the config's grants, never a sandbox."""

from __future__ import annotations

import os
import socket

import pytest

from ebpfguard.config import load_config
from ebpfguard.outputs.runner_access import Grant, Peer, RunnerAccess, parse_grants, peer_of

GROUPS = {"runners": 4242}


def grants(*entries):
    return parse_grants(list(entries), group_id=lambda name: GROUPS[name])


def test_root_on_the_host_may_ask_about_any_sandbox():
    access = RunnerAccess([])
    assert access.may_ask(Peer(1, 0, frozenset({0}), "host"), "sandbox-anything")
    assert not access.open_to_others


def test_a_granted_uid_may_ask_only_about_its_globs():
    access = RunnerAccess(grants({"uid": 1000, "sandboxes": ["sandbox-ci-*"]}))
    runner = Peer(1, 1000, frozenset({1000}), "host")
    assert access.may_ask(runner, "sandbox-ci-17")
    assert not access.may_ask(runner, "sandbox-rl-3")
    assert not access.may_connect(Peer(1, 1001, frozenset({1001}), "host"))


def test_a_granted_group_counts_through_supplementary_groups():
    access = RunnerAccess(grants({"group": "runners", "sandboxes": ["sandbox-rl-*"]}))
    assert access.may_ask(Peer(1, 1005, frozenset({1005, 4242}), "host"), "sandbox-rl-3")
    assert not access.may_ask(Peer(1, 1005, frozenset({1005}), "host"), "sandbox-rl-3")


def test_a_caller_inside_a_sandbox_is_refused_even_as_root_or_granted():
    access = RunnerAccess(grants({"uid": 1000, "sandboxes": ["*"]}))
    assert not access.may_connect(Peer(1, 0, frozenset({0}), "sandbox-a"))
    assert not access.may_ask(Peer(1, 1000, frozenset({1000}), "sandbox-a"), "sandbox-a")
    assert not access.may_ask(Peer(1, 1000, frozenset({1000}), "unknown"), "sandbox-b")


def test_a_hostile_sandbox_name_is_matched_in_linear_time():
    access = RunnerAccess(grants({"uid": 1000, "sandboxes": ["*a*a*a*a*a*a*a*a*b"]}))
    assert not access.may_ask(Peer(1, 1000, frozenset({1000}), "host"), "a" * 100_000)


@pytest.mark.parametrize("entry, problem", [
    ({"uid": 1000}, "sandboxes"),
    ({"uid": 1000, "group": "runners", "sandboxes": ["*"]}, "exactly one"),
    ({"sandboxes": ["*"]}, "exactly one"),
    ({"uid": -1, "sandboxes": ["*"]}, "uid"),
    ({"uid": 1000, "sandboxes": ["*"], "role": "admin"}, "an entry is"),
    ({"group": "nobody-has-this", "sandboxes": ["*"]}, "no group"),
    ("uid 1000", "an entry is"),
])
def test_a_bad_grant_names_its_entry_and_what_is_wrong(entry, problem):
    with pytest.raises(ValueError, match=r"clients\.allow\[0\].*" + problem):
        grants(entry)


def test_peer_of_a_connection_is_this_process_on_the_host(tmp_path):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        peer = peer_of(a, load_config()["sandbox"])
    assert (peer.pid, peer.uid) == (os.getpid(), os.getuid())
    assert os.getgid() in peer.groups


def test_grant_applies_by_uid_or_gid():
    assert Grant(7, None, ("*",)).applies_to(Peer(1, 7, frozenset(), "host"))
    assert Grant(None, 9, ("*",)).applies_to(Peer(1, 1, frozenset({9}), "host"))
