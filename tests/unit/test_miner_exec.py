"""miner.exec: miners caught by name and by command line, renamed or wrapped; benign left alone."""

from __future__ import annotations

import base64
import json

import pytest

from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.miner_exec import wallet_kind

XMR = "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD"
ETH = "0x1d7E3d7a3c3d7B8c86B8f0f3b2e8A8f6C3Bd0A11"


def alerts_for(argv, *, filename=None, read_file=None, pid=7):
    engine = DetectionEngine(load_rules(), read_file=read_file)
    event = {"kind": "exec", "sandbox": {"name": "sandbox-1"}, "process": {"pid": pid, "argv": argv}}
    if filename:
        event["filename"] = filename
    return engine.process(event)


def only_alert(argv, **kwargs):
    [alert] = alerts_for(argv, **kwargs)
    assert alert["rule"] == "miner.exec"
    return alert


def hint_names(alert):
    return {hint["hint"] for hint in alert["evidence"]["hints"]}


def test_known_miner_binary_is_flagged_by_name():
    alert = only_alert(["/opt/xmrig-6.21.0/xmrig"])
    assert alert["evidence"]["binary"] == "xmrig"


def test_renamed_xmrig_as_kworker_with_pool_url_is_flagged():
    alert = only_alert(["/tmp/.x/kworker", "-o", "stratum+tcp://45.9.148.125:80", "-u", XMR])
    assert alert["evidence"]["binary"] is None
    assert {"disguise", "pool_url", "wallet"} <= hint_names(alert)
    assert alert["evidence"]["score"] >= alert["evidence"]["min_score"] == 3


def test_renamed_miner_as_systemd_journald_with_pool_args_is_flagged():
    alert = only_alert(["systemd-journald", "-o", "pool.supportxmr.com:443", "-u", XMR, "-k", "--tls"],
                       filename="/var/tmp/.s/systemd-journald")
    assert {"disguise", "pool_host", "wallet"} <= hint_names(alert)


def test_miner_started_by_bash_c_is_flagged_with_the_inner_command():
    alert = only_alert(["bash", "-c", f"cd /tmp && nohup ./update -a rx/0 -o 1.2.3.4:3333 -u {XMR} >/dev/null 2>&1 &"])
    assert alert["evidence"]["command"][0] == "./update"
    assert {hint["source"] for hint in alert["evidence"]["hints"]} == {"sh -c"}


def test_miner_hidden_in_base64_piped_to_a_shell_is_decoded_and_flagged():
    payload = base64.b64encode(f"./x -o stratum+tcp://pool.minexmr.com:4444 -u {XMR}".encode()).decode()
    alert = only_alert(["sh", "-c", f"echo {payload} | base64 -d | sh"])
    assert {hint["source"] for hint in alert["evidence"]["hints"]} == {"base64"}


def test_wrappers_are_peeled_off():
    alert = only_alert(["nohup", "nice", "-n", "19", "screen", "-dmS", "s", "./svc", "--donate-level", "1"])
    assert alert["evidence"]["command"] == ["./svc", "--donate-level", "1"]


def test_config_file_with_pool_url_is_read_in_the_live_agent():
    config = json.dumps({"donate-level": 1, "pools": [{"url": "stratum+tcp://gulf.moneroocean.stream:10128", "user": XMR}]})
    asked = []

    def read_file(event, path):
        asked.append((event["process"]["pid"], path))
        return config.encode() if path == "config.json" else None

    alert = only_alert(["./kworker", "-c", "config.json"], read_file=read_file)
    assert asked == [(7, "config.json")]
    assert {"pool_url", "donate", "wallet"} <= hint_names(alert)
    assert "config:config.json" in {hint["source"] for hint in alert["evidence"]["hints"]}


def test_config_beside_a_binary_run_without_arguments_is_read():
    def read_file(event, path):
        return b'{"pools": [{"url": "pool.hashvault.pro:443"}]}' if path == "/tmp/.cache/config.json" else None

    assert alerts_for(["/tmp/.cache/kworker"], filename="/tmp/.cache/kworker", read_file=read_file)


def test_config_option_without_a_file_reader_does_not_alert_for_an_unknown_binary():
    assert alerts_for(["./kworker", "-c", "config.json"]) == []


def test_one_weak_hint_does_not_alert():
    assert alerts_for(["./trainer", "--cuda"]) == []
    assert alerts_for(["./tool", "-o", "example.com:8080"]) == []
    assert alerts_for(["python", "check.py", ETH]) == []
    assert alerts_for(["/usr/lib/systemd/systemd-journald"]) == []


@pytest.mark.parametrize("argv", [
    ["grep", "-rn", "stratum+tcp://", "logs/"],
    ["git", "clone", "https://github.com/xmrig/xmrig"],
    ["pip", "install", "xmrig-wrapper"],
    ["man", "xmrig"],
    ["minerva", "--config", "configs/base.yaml"],
    ["java", "-jar", "minecraft_server.jar", "nogui"],
    ["hashcat", "-a", "0", "-m", "1400", "hashes.txt"],
])
def test_benign_commands_about_miners_are_not_flagged(argv):
    assert alerts_for(argv) == []


def test_data_commands_need_twice_the_score():
    assert alerts_for(["echo", "stratum+tcp://pool.supportxmr.com:3333"]) == []
    assert alerts_for(["echo", "-o", "stratum+tcp://pool.supportxmr.com:3333", "-u", XMR])


def test_user_file_can_add_a_binary_and_raise_the_bar(tmp_path):
    extra = tmp_path / "local.yaml"
    extra.write_text("lists:\n  miner_binaries: [mybadminer]\nrules:\n  - id: miner.exec\n    params: {min_score: 9}\n")
    engine = DetectionEngine(load_rules([extra]))
    event = {"kind": "exec", "process": {"argv": ["mybadminer", "-o", "stratum+tcp://h.example:3333", "-a", "rx/0"]}}
    [alert] = engine.process(event)
    assert alert["evidence"]["binary"] == "mybadminer" and alert["evidence"]["min_score"] == 9


@pytest.mark.parametrize("text, kind", [
    (XMR, "distinctive"),
    ("XMR:" + XMR + ".rig1", "distinctive"),
    (ETH + ".worker", "shape"),
    ("1P7ujsXeX7GxQwHNnJsRMgAdNkFZmNVqJT", "shape"),
    ("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "shape"),
    ("kaspa:qr0lr4ml9fn3chekrqmjdkergxl93l4wrk3dankcgvjq776s9wn9jkdskewva", "distinctive"),
    ("not-a-wallet-but-long-enough-to-check", None),
])
def test_wallet_shapes(text, kind):
    assert wallet_kind(text) == kind


@pytest.mark.parametrize("argv", [
    ["monerod", "--start-mining", XMR, "--mining-threads", "4"],
    ["./node", "--start-mining", XMR],
    ["geth", "--datadir", "/data", "--mine", "--miner.threads", "2"],
    ["zcashd", "-gen", "-genproclimit=4"],
])
def test_node_daemons_with_their_own_miner_switched_on_are_miners(argv):
    assert "node_mining" in hint_names(only_alert(argv))


@pytest.mark.parametrize("argv", [
    ["geth", "--http", "--syncmode", "snap"],
    ["gh", "pr", "list", "--mine"],
    ["monerod", "--detach", "--prune-blockchain"],
])
def test_nodes_not_mining_and_mine_flags_of_other_tools_are_not(argv):
    assert alerts_for(argv) == []


def test_a_pool_given_as_server_and_port_apart_reads_as_host_and_port():
    alert = only_alert(["./svc", "--server", "eu1.ethermine.org", "--port", "4444", "--user", ETH + ".rig"])
    assert {"pool_option", "pool_host"} <= hint_names(alert)
    assert alerts_for(["psql", "--host", "db.internal", "--port", "5432"]) == []


@pytest.mark.parametrize("argv", [
    ["[kworker/0:1]", "-o", "45.9.148.35:80", "-B"],
    ["/tmp/.ICE-unix/[ksoftirqd/0]", "--cpu-max-threads-hint=75"],
])
def test_a_kernel_thread_name_in_argv0_even_with_a_slash_is_a_disguise(argv):
    assert "disguise" in hint_names(only_alert(argv))


def test_a_bare_binary_reads_config_json_in_its_working_directory_too():
    config = json.dumps({"pools": [{"url": "pool.supportxmr.com:443", "user": XMR}]}).encode()
    read = {"config.json": config}
    alert = only_alert(["./svc"], filename="/usr/local/share/svc/svc", read_file=lambda event, path: read.get(path))
    assert any(hint["source"] == "config:config.json" for hint in alert["evidence"]["hints"])


def test_the_joined_config_option_is_read():
    config = json.dumps({"pools": [{"url": "stratum+tcp://x.example:3333", "user": XMR}]}).encode()
    read = {"/tmp/c.json": config}
    alert = only_alert(["./svc", "--config=/tmp/c.json"], read_file=lambda event, path: read.get(path))
    assert any(hint["source"] == "config:/tmp/c.json" for hint in alert["evidence"]["hints"])


def exec_event(argv, **fields):
    return {"kind": "exec", "sandbox": {"name": "sandbox-1"}, "process": {"pid": 7, "argv": argv}, **fields}


def test_argv_padded_past_the_probe_bounds_is_itself_scored():
    argv = ["/tmp/worker", *([""] * 35), *(["AAAA"] * 35), "-o", "stratum+tcp://pool.example.net:3333", "-u", XMR]
    [alert] = DetectionEngine(load_rules()).process(exec_event(argv, argv_anomalies=["past_entry_bounds"]))
    hints = {hint["hint"]: hint for hint in alert["evidence"]["hints"]}
    assert hints["argv_hidden"]["match"] == "past_entry_bounds"
    assert hints["argv_padded"]["match"] == "69 empty or repeated arguments"
    assert {"pool_url", "wallet"} <= set(hints)


def test_argv_changed_after_exec_adds_to_a_weak_miner_score():
    weak = ["/tmp/worker", "-u", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"]  # a wallet-shaped login: 2
    engine = DetectionEngine(load_rules())
    assert engine.process(exec_event(weak)) == []
    [alert] = engine.process(exec_event(weak, argv_anomalies=["changed_after_entry"]))
    assert {"argv_changed", "wallet"} <= hint_names(alert)


def test_a_long_or_unreadable_argv_alone_does_not_alert():
    many_files = ["cc", *(f"obj{i}.o" for i in range(300))]
    engine = DetectionEngine(load_rules())
    assert engine.process(exec_event(many_files, argv_anomalies=["past_entry_bounds"])) == []
    assert engine.process(exec_event(["/bin/ls", "-l"], argv_anomalies=["unreadable_at_entry"])) == []
    assert engine.process(exec_event(["x", *([""] * 40)])) == []
