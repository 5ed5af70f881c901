"""The stratum classifier: mining dialects in either direction, framings, and what is not mining."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from ebpfguard.detect.stratum import (
    Segment, StratumMatch, best_match, classify_segment, close_truncated, starts_like_json,
)

# XMRig's published donation wallet and the shapes of its Client::login() (xmrig-proxy doc/STRATUM.md).
WALLET = "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD"
ALGOS = ["cn/1", "cn/2", "cn/r", "cn/fast", "cn/half", "cn/xao", "cn/rto", "cn/rwz", "cn/zls", "cn/double",
         "cn-lite/1", "cn-heavy/0", "cn-heavy/tube", "cn-heavy/xhv", "cn-pico", "cn-pico/tlo", "rx/0",
         "rx/wow", "rx/arq", "rx/graft", "rx/sfx", "rx/keva", "rx/yada", "cn/ccx", "cn/upx2", "argon2/chukwa",
         "argon2/chukwav2", "argon2/ninja", "ghostrider"]
XMRIG_LOGIN = json.dumps({"id": 1, "jsonrpc": "2.0", "method": "login", "params": {
    "login": WALLET, "pass": "x", "agent": "XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.3.0",
    "algo": ALGOS}}, separators=(",", ":")).encode() + b"\n"


def verdict(data: bytes, at_message_start: bool = True):
    return best_match(classify_segment(data, at_message_start).matches)


def line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def test_xmrig_login_cut_at_512_bytes_still_gives_the_wallet():
    assert len(XMRIG_LOGIN) > 512
    assert verdict(XMRIG_LOGIN[:512]) == StratumMatch("monero", "login", WALLET)


def test_stratum1_subscribe_and_authorize_in_one_segment_name_the_worker():
    data = (b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\n'
            b'{"id": 2, "method": "mining.authorize", "params": ["slush.miner1", "password"]}\n')
    assert verdict(data) == StratumMatch("stratum1", "mining.authorize", "slush.miner1")


def test_nicehash_subscribe_makes_the_segment_nicehash():
    data = (line({"id": 1, "method": "mining.subscribe", "params": ["EthereumMiner/1.0.0", "EthereumStratum/1.0.0"]})
            + line({"id": 2, "method": "mining.authorize", "params": ["test", "password"]}))
    assert verdict(data) == StratumMatch("nicehash", "mining.authorize", "test")
    assert verdict(data.split(b"\n")[0]).variant == "nicehash"


def test_nicehash_job_share_and_extranonce_are_told_from_bitcoin_stratum_by_shape():
    job = line({"id": None, "method": "mining.notify", "params": [
        "bf0488aa", "abad8f99f3918bf903c6a909d9bbc0fdfa5a2f4b9cb1196175ec825c6610126c",
        "645cf20198c2f3861e947d4f67e3ab63b7b2e24dcc9095bd9123e7b33371f6cc", True]})
    assert verdict(job) == StratumMatch("nicehash", "mining.notify")
    assert verdict(line({"id": 244, "method": "mining.submit", "params": ["username", "bf0488aa", "6a909d9bbc0f"]})).variant == "nicehash"
    assert verdict(line({"id": None, "method": "mining.set_extranonce", "params": ["af4c"]})).variant == "nicehash"
    assert verdict(line({"id": None, "method": "mining.set_extranonce", "params": ["08000002", 4]})).variant == "stratum1"


def test_pool_replies_alone_are_mining():
    replies = {
        b'{"params": ["bf", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", '
        b'"01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008", '
        b'"072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000", [], '
        b'"00000002", "1c2ac4af", "504e86b9", false], "id": null, "method": "mining.notify"}\n': ("stratum1", "mining.notify"),
        b'{"id": null, "method": "mining.set_difficulty", "params": [2]}\n': ("stratum1", "mining.set_difficulty"),
        b'{"id": 1, "result": [ [ ["mining.set_difficulty", "b4b6693b72a50c7116db18d6497cac52"], '
        b'["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"]], "08000002", 4], "error": null}\n': ("stratum1", "mining.subscribe"),
        b'{"id":1,"result":[["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f","EthereumStratum/1.0.0"],"080c"],"error":null}\n':
            ("nicehash", "mining.subscribe"),
        b'{"jsonrpc":"2.0","method":"job","params":{"blob":"0707d5ef","job_id":"4BiGm3/RgGQz","target":"b88d0600",'
        b'"id":"1be0b7b6"}}\n': ("monero", "job"),
        b'{"id":1,"jsonrpc":"2.0","error":null,"result":{"id":"1be0b7b6","job":{"blob":"070780e6","job_id":"q7PLUPL2",'
        b'"target":"b88d0600","id":"1be0b7b6"},"status":"OK"}}\n': ("monero", "login"),
        b'{"jsonrpc":"2.0","result":["0x1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef",'
        b'"0x5eed00000000000000000000000000005eed0000000000000000000000000000",'
        b'"0xd1ff1c01710000000000000000000000d1ff1c01710000000000000000000000"]}\n': ("ethproxy", "eth_getWork"),
    }
    for data, (variant, method) in replies.items():
        assert verdict(data) == StratumMatch(variant, method), data


def test_ethproxy_login_counts_framed_or_not_and_work_methods_only_framed():
    login = b'{"id":1,"method":"eth_submitLogin","worker":"eth1.0","params":["0x28E1DCB35D93C1a1a8685BA1Eb8EfAa26F53310D","x"],"jsonrpc":"2.0"}'
    assert verdict(login) == StratumMatch("ethproxy", "eth_submitLogin", "0x28E1DCB35D93C1a1a8685BA1Eb8EfAa26F53310D")
    get_work = b'{"jsonrpc":"2.0","method":"eth_getWork","params":[],"id":1}'
    assert verdict(get_work) is None  # an HTTP body to an Ethereum node looks just like this
    assert verdict(get_work + b"\n") == StratumMatch("ethproxy", "eth_getWork")


def test_monero_methods_need_their_shapes():
    assert verdict(line({"id": 2, "method": "keepalived", "params": {"id": "1be0b7b6"}})) == StratumMatch("monero", "keepalived")
    assert verdict(line({"id": 2, "jsonrpc": "2.0", "method": "submit", "params": {
        "id": "1be0b7b6", "job_id": "4BiGm3", "nonce": "d0030040", "result": "e136"}})) == StratumMatch("monero", "submit")
    # Generic JSON-RPC APIs have logins and submits too.
    assert verdict(line({"id": 1, "jsonrpc": "2.0", "method": "login", "params": {"login": "bob", "pass": "hunter2"}})) is None
    assert verdict(line({"id": 3, "jsonrpc": "2.0", "method": "submit", "params": {"form": "contact"}})) is None
    assert verdict(line({"id": 1, "method": "login", "params": {"login": WALLET}})).variant == "monero"


def test_other_json_rpc_and_json_lines_are_not_mining():
    for data in (
        b'{"jsonrpc": "2.0", "method": "server.version", "params": ["electrum 4.5.5", "1.4"], "id": 0}\n',
        b'{"jsonrpc": "2.0", "method": "blockchain.scripthash.subscribe", "params": ["8b01df4e"], "id": 2}\n',
        b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[],"id":83}\n',
        b'{"jsonrpc":"2.0","method":"eth_mining","params":[],"id":71}\n',
        b'{"jsonrpc": "1.0", "id": "curltest", "method": "getblocktemplate", "params": [{"rules": ["segwit"]}]}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":1234,"rootUri":"file:///src"}}\n',
        b'{"level":"info","ts":1700000000.1,"msg":"mining.notify handled","method":"GET","path":"/metrics"}\n',
        b'[{"jsonrpc":"2.0","method":"eth_chainId","params":[],"id":1},{"jsonrpc":"2.0","method":"eth_gasPrice","id":2}]\n',
    ):
        assert verdict(data) is None, data


def test_a_segment_after_a_gap_skips_its_partial_first_line():
    data = b'ams": ["x"]}\n{"id": 3, "method": "mining.submit", "params": ["w", "bf", "00000001", "504e86ed", "b2957c02"]}\n'
    assert verdict(data, at_message_start=False) == StratumMatch("stratum1", "mining.submit")
    assert classify_segment(b'"mining.subscribe", "params": []}', at_message_start=False) == Segment((), (), None)


def test_the_unterminated_last_line_is_judged_apart_and_returned_for_the_next_segment():
    segment = classify_segment(b'{"id": 1, "method": "mining.subscribe", "params": []}\n{"id": 2, "method": "mining.authorize", "par', True)
    assert [m.method for m in segment.complete] == ["mining.subscribe"]
    assert [m.method for m in segment.partial] == ["mining.authorize"]
    assert segment.tail == b'{"id": 2, "method": "mining.authorize", "par'


def test_concatenated_objects_on_one_line_are_each_read():
    data = b'{"id":5,"result":true,"error":null}{"id":null,"method":"mining.set_difficulty","params":[8]}\n'
    assert verdict(data) == StratumMatch("stratum1", "mining.set_difficulty")


def test_close_truncated_keeps_every_complete_member():
    assert close_truncated('{"a": [1, 2') == {"a": [1, 2]}
    assert close_truncated('{"a": 1, "b": "unfinish') == {"a": 1}
    assert close_truncated('{"a": 1}]') is None
    assert close_truncated("not json") is None


def test_starts_like_json_allows_leading_whitespace_only():
    assert starts_like_json(b'  \r\n{"id":1}') and starts_like_json(b"[1]")
    assert not starts_like_json(b"POST / HTTP/1.1\r\n") and not starts_like_json(b"SSH-2.0-OpenSSH_9.6\r\n")


def test_deep_nesting_is_not_an_error():
    assert verdict(b"[" * 5000 + b"\n" + b"[" * 5000) is None


@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_never_raise(data, at_start):
    classify_segment(data, at_start)


@given(st.integers(min_value=1, max_value=len(XMRIG_LOGIN)))
def test_every_cut_of_a_login_after_the_wallet_names_it(cut):
    found = verdict(XMRIG_LOGIN[:cut])
    wallet_end = XMRIG_LOGIN.index(WALLET.encode()) + len(WALLET)  # its closing quote
    if cut > wallet_end:
        assert found == StratumMatch("monero", "login", WALLET)
    else:
        assert found is None


def test_eip1571_notifications_without_id_or_jsonrpc_are_ethereumstratum2():
    assert verdict(line({"method": "mining.bye"})) == StratumMatch("ethstratum2", "mining.bye")
    assert verdict(line({"method": "mining.set", "params": {"stage": "eval"}})) is None
    assert verdict(line({"method": "mining.set", "params": {"seed": "0xa795", "target": "0x0112"}})).variant == "ethstratum2"


def test_eip1571_hello_needs_its_protocol_name():
    hello = {"id": 0, "method": "mining.hello", "params": {"agent": "ethminer-0.19", "proto": "EthereumStratum/2.0.0"}}
    assert verdict(line(hello)) == StratumMatch("ethstratum2", "mining.hello")
    assert verdict(line({"id": 0, "method": "hello", "params": {"proto": "EthereumStratum/2.0.0"}})) is None
    assert verdict(line({"id": 0, "result": {"proto": "EthereumStratum/2.0.0", "resume": "1"}})).variant == "ethstratum2"


def test_a_method_outside_the_mining_namespace_needs_id_or_jsonrpc():
    assert verdict(line({"method": "login", "params": {"login": WALLET, "agent": "XMRig/6"}})) is None
    assert verdict(line({"id": 1, "method": "login", "params": {"login": WALLET, "agent": "XMRig/6"}})).variant == "monero"


def test_grin_job_template_job_and_submit_are_grin():
    assert verdict(line({"id": "2", "jsonrpc": "2.0", "method": "getjobtemplate", "params": None})).variant == "grin"
    job = {"id": "Stratum", "jsonrpc": "2.0", "method": "job", "params": {"height": 1, "job_id": 5, "pre_pow": "0001"}}
    assert verdict(line(job)) == StratumMatch("grin", "job")
    submit = {"id": "0", "jsonrpc": "2.0", "method": "submit", "params": {"nonce": 1, "job_id": 0, "pow": [1, 2]}}
    assert verdict(line(submit)) == StratumMatch("grin", "submit")


def test_beam_login_names_its_api_key_and_a_beam_job_needs_a_hex_input():
    login = {"method": "login", "api_key": "3a5bf2d7", "id": "login", "jsonrpc": "2.0"}
    assert verdict(line(login)) == StratumMatch("grin", "login", "3a5bf2d7")
    job = {"id": "1", "jsonrpc": "2.0", "method": "job", "difficulty": 92341259, "input": "a4" * 32}
    assert verdict(line(job)).variant == "grin"
    assert verdict(line({**job, "input": "s3://bucket/train.parquet"})) is None


def test_a_whole_message_without_its_newline_is_judged_at_once():
    segment = classify_segment(XMRIG_LOGIN.rstrip(b"\n"), True)
    assert segment.tail_whole and best_match(segment.partial).variant == "monero"
    assert not classify_segment(XMRIG_LOGIN[:300], True).tail_whole


def test_pool_reconnect_seen_alone_is_stratum():
    message = {"id": None, "method": "client.reconnect", "params": ["stratum2.pool.example", 3333, 0]}
    assert verdict(line(message)) == StratumMatch("stratum1", "client.reconnect")
