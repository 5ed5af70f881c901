"""The condition language: grammar, quoting, every operator, type errors with their offsets."""

from __future__ import annotations

import pytest

from ebpfguard.detect.compiler import Compiler, Errors, compile_template, glob_to_re2
from ebpfguard.detect.fields import EventView, FieldEnv
from ebpfguard.detect.language import (
    MAX_NESTING, And, Compare, ConditionError, ListLiteral, ListRef, Literal, MacroRef, Not, Or, parse,
)

EXEC = {
    "kind": "exec",
    "filename": "/usr/bin/curl",
    "retval": 0,
    "sandbox": {"name": "sandbox-7", "runtime": "pattern"},
    "process": {"pid": 42, "comm": "curl", "exe": "/usr/bin/curl", "uid": 1000,
                "argv": ["curl", "-s", "https://get.example.com/install.sh"],
                "ancestry": [{"pid": 41, "comm": "bash", "exe": "/bin/bash"}, {"pid": 1, "comm": "systemd", "exe": "/sbin/init"}]},
}
CONNECT = {"kind": "connect", "daddr": "10.1.2.3", "dport": 25, "retval": -111,
           "sandbox": {"name": "sandbox-7"}, "process": {"pid": 42, "comm": "python3"}}

LISTS = {"mail_ports": (25, 465, 587), "shells": ("sh", "bash"), "internal": ("10.0.0.0/8", "192.168.0.0/16")}
MACROS = {"sandboxed": 'sandbox.name glob "sandbox-*"', "mail": "dport in @mail_ports",
          "loop_a": "loop_b", "loop_b": "loop_a", "broken": "nosuch.field = 1"}


def holds(condition: str, event: dict = EXEC) -> bool:
    compiled = Compiler(LISTS, MACROS).compile(condition)
    return compiled.matches(EventView(event, FieldEnv({}, lambda rule_id: None)))


def errors_of(condition: str) -> list[tuple[str, int]]:
    with pytest.raises(Errors) as caught:
        Compiler(LISTS, MACROS).compile(condition)
    return [(error.message, error.offset) for error in caught.value.errors]


# -- grammar -----------------------------------------------------------------------------------


def test_and_binds_tighter_than_or_and_not_tighter_than_and():
    tree = parse('not a = 1 or b = 2 and c = 3')
    assert isinstance(tree, Or)
    first, second = tree.items
    assert isinstance(first, Not) and isinstance(first.item, Compare)
    assert isinstance(second, And) and [item.field for item in second.items] == ["b", "c"]


def test_parentheses_override_precedence():
    tree = parse('(a = 1 or b = 2) and c = 3')
    assert isinstance(tree, And) and isinstance(tree.items[0], Or)
    assert holds('(kind = "connect" or kind = "exec") and process.comm = "curl"')
    assert not holds('kind = "connect" or kind = "exec" and process.comm = "wget"', EXEC)
    assert holds('kind = "exec" or kind = "connect" and process.comm = "wget"', EXEC)


def test_values_parse_as_strings_numbers_booleans_lists_and_list_references():
    text = """a in ("x", 'y', 3, -4, 1.5, true, false) and b in [1] and c in @ports"""
    tree = parse(text)
    literal_list, bracket_list, reference = (item.value for item in tree.items)
    assert isinstance(literal_list, ListLiteral)
    assert [item.value for item in literal_list.items] == ["x", "y", 3, -4, 1.5, True, False]
    assert isinstance(bracket_list, ListLiteral) and bracket_list.items == (Literal(1, text.index("[1]") + 1),)
    assert reference == ListRef("ports", text.index("@ports"))


def test_escapes_in_double_and_single_quoted_strings():
    tree = parse(r'''a = "say \"hi\"\n\t\\" and b = 'it\'s' and c = "\d+\.\d"''')
    assert [item.value.value for item in tree.items] == ['say "hi"\n\t\\', "it's", r"\d+\.\d"]


def test_a_bare_name_is_a_macro_reference():
    assert parse("sandboxed and not mail") == And((MacroRef("sandboxed", 0), Not(MacroRef("mail", 18), 14)))


@pytest.mark.parametrize(("text", "message", "offset"), [
    ('kind = ', "expected a value, found the end of the condition", 7),
    ('kind = "exec', "string not closed", 7),
    ('kind = "exec" and', "expected a field, a macro, `not` or `(`, found the end of the condition", 17),
    ('(kind = "exec"', "expected `)` to close the `(` at offset 0, found the end of the condition", 14),
    ('kind == "exec"', "expected a value, found `=`", 6),
    ('kind = exec', 'expected a value, found `exec` (quote strings: "...")', 7),
    ('kind = "exec" dport = 1', "expected `and`, `or` or the end of the condition, found `dport`", 14),
    ('kind ~ "exec"', "unexpected character '~'", 5),
    ('dport in (1, 2', "expected `,` or `)` in the list, found the end of the condition", 14),
    ('process.comm curl', "expected an operator after 'process.comm', found `curl`", 13),
])
def test_syntax_errors_name_what_was_expected_and_where(text, message, offset):
    with pytest.raises(ConditionError) as caught:
        parse(text)
    assert (caught.value.message, caught.value.offset) == (message, offset)


def test_nesting_is_bounded():
    with pytest.raises(ConditionError, match="nested more than"):
        parse("(" * (MAX_NESTING + 1) + "a = 1" + ")" * (MAX_NESTING + 1))
    with pytest.raises(ConditionError, match="nested more than"):
        parse("not " * (MAX_NESTING + 1) + "a = 1")
    deepest = MAX_NESTING - 1
    assert parse("(" * deepest + "a = 1" + ")" * deepest) == Compare("a", "=", Literal(1, deepest + 4), deepest)


def test_long_chains_of_and_and_or_do_not_recurse():
    text = " or ".join(f"dport = {port}" for port in range(3000))
    assert holds(text, CONNECT)


# -- operators ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "event", "expected"), [
    ('kind = "exec"', EXEC, True),
    ('kind = "connect"', EXEC, False),
    ('kind != "connect"', EXEC, True),
    ("dport = 25", CONNECT, True),
    ("dport != 25", CONNECT, False),
    ("dport < 26", CONNECT, True),
    ("dport < 25", CONNECT, False),
    ("dport <= 25", CONNECT, True),
    ("dport > 24", CONNECT, True),
    ("dport > 25", CONNECT, False),
    ("dport >= 25", CONNECT, True),
    ("retval < 0", CONNECT, True),
    ("dport in (25, 587)", CONNECT, True),
    ("dport in @mail_ports", CONNECT, True),
    ("dport in (80, 443)", CONNECT, False),
    ('process.comm in @shells', EXEC, False),
    ('filename contains "bin/cu"', EXEC, True),
    ('filename contains ("nope", "curl")', EXEC, True),
    ('filename startswith "/usr/"', EXEC, True),
    ('filename startswith "/tmp/"', EXEC, False),
    ('filename endswith "/curl"', EXEC, True),
    ('filename endswith ("/wget", "/nc")', EXEC, False),
    ('sandbox.name glob "sandbox-*"', EXEC, True),
    ('sandbox.name glob "sandbox-?"', EXEC, True),
    ('sandbox.name glob "sandbox-[0-6]"', EXEC, False),
    ('sandbox.name glob "sandbox-[!0-6]"', EXEC, True),
    ('sandbox.name glob "sandbox"', EXEC, False),
    ('filename pmatch "/usr/bin"', EXEC, True),
    ('filename pmatch "/usr/bin/"', EXEC, True),
    ('filename pmatch "/usr/bi"', EXEC, False),
    ('filename pmatch "/usr/bin/curl"', EXEC, True),
    ('filename pmatch ("/tmp", "/dev/shm")', EXEC, False),
    ('filename pmatch "/"', EXEC, True),
    ('daddr cidr "10.0.0.0/8"', CONNECT, True),
    ('daddr cidr @internal', CONNECT, True),
    ('daddr cidr ("192.168.0.0/16", "fd00::/8")', CONNECT, False),
    ('daddr = "10.1.2.3"', CONNECT, True),
    ('daddr in ("10.1.2.4", "10.1.2.3")', CONNECT, True),
    ('filename regex "^/usr/(bin|sbin)/c[a-z]+$"', EXEC, True),
    ('filename regex "wget"', EXEC, False),
    ('filename regex "(?i)CURL"', EXEC, True),
    ('filename regex "\\d"', EXEC, False),
    ("process.argv_truncated = false", {**EXEC, "process": {**EXEC["process"], "argv_truncated": False}}, True),
    ("sni exists", CONNECT, False),
    ("dport exists", CONNECT, True),
])
def test_every_operator(condition, event, expected):
    assert holds(condition, event) is expected


def test_list_fields_compare_as_any_of_and_negation_as_none_of():
    assert holds('process.ancestry.comm = "bash"')
    assert holds('process.argv contains "example.com"')
    assert holds('process.ancestry.pid in (1, 99)')
    assert not holds('process.ancestry.comm = "sshd"')
    assert holds('process.ancestry.comm != "sshd"')
    assert not holds('process.ancestry.comm != "bash"')  # `!=` is `not =`: no ancestor is bash
    assert holds("process.ancestry.comm exists")
    assert not holds("process.ancestry.comm exists", {**EXEC, "process": {"ancestry": []}})


def test_missing_or_mistyped_fields_are_false_and_never_raise():
    hostile = {"kind": "connect", "dport": "25", "daddr": ["10.0.0.1"], "sandbox": "sandbox-1",
               "process": {"ancestry": [None, 3, {"comm": 7}], "argv": "curl"}}
    for condition in ("dport = 25", "dport > 1", 'daddr cidr "10.0.0.0/8"', 'sandbox.name glob "*"',
                      'process.ancestry.comm = "bash"', 'process.argv contains "curl"', 'process.cmdline contains "c"'):
        assert holds(condition, hostile) is False
    assert holds('sni != "x"', CONNECT)


def test_macros_and_lists_expand():
    assert holds("sandboxed and mail", CONNECT)
    assert not holds("sandboxed and not mail", CONNECT)


def test_detector_results_are_fields():
    from ebpfguard.detect.engine import DetectionEngine, load_rules

    engine = DetectionEngine(load_rules())
    compiler = Compiler(LISTS, MACROS)
    miner = {"kind": "exec", "process": {"argv": ["xmrig", "-o", "pool.supportxmr.com:443", "-u", "x", "--donate-level", "1"]}}
    view = EventView(miner, engine._fields)
    assert compiler.compile("exec.miner.score >= 3").matches(view)
    assert compiler.compile('exec.miner.binary = "xmrig" and exec.miner.hints = "donate"').matches(view)
    ssh = {"kind": "exec", "filename": "/usr/bin/ssh", "process": {"argv": ["ssh", "-N", "-R", "2222:localhost:22", "relay.example"]}}
    view = EventView(ssh, engine._fields)
    assert compiler.compile('exec.ssh.client = "openssh" and exec.ssh.remote_forwards = "2222:localhost:22"').matches(view)
    assert not compiler.compile("exec.miner.score > 0").matches(view)


# -- type errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "message", "offset"), [
    ('proces.comm = "x"', "unknown field 'proces.comm' (did you mean 'process.comm'?)", 0),
    ('kind = "conect"', "kind is never 'conect' (it is one of: exec, exit, socket, connect, flow, dns, open, gpu, summary)", 7),
    ('dport = "25"', "dport is a number: compare it with a number, not '25'", 8),
    ('dport = 25.5', "dport is an integer: it never equals 25.5", 8),
    ('process.comm = 3', "process.comm is a str: compare it with a quoted string, not 3", 15),
    ('dport contains 2', "`contains` does not apply to dport (int; operators: != < <= = > >= in)", 0),
    ('process.comm cidr "10.0.0.0/8"', "`cidr` does not apply to process.comm (str; operators: != = contains endswith glob in pmatch regex startswith)", 0),
    ('daddr cidr "10.0.0.0/33"', "'10.0.0.0/33' is not an address range (e.g. \"10.0.0.0/8\")", 11),
    ('daddr = "localhost"', "'localhost' is not an IP address", 8),
    ('dport in 25', "`in` takes a list: dport in (...) or in @list", 9),
    ('dport = (25, 26)', "`=` takes one value, not a list (use `in`)", 8),
    ('dport in @nope', "unknown list @nope", 9),
    ('process.comm in @mail_ports', "process.comm is a str: compare it with a quoted string, not 25", 16),
    ('process.comm regex "(a)\\\\1"', "regex '(a)\\\\1' is not usable by RE2 (linear time: no backreferences or lookaround): "
     "invalid escape sequence: \\1", 19),
    ('process.comm regex "(?=x)"', "regex '(?=x)' is not usable by RE2 (linear time: no backreferences or lookaround): "
     "invalid perl operator: (?=", 19),
    ('sandboxd', "unknown macro 'sandboxd' (did you mean 'sandboxed'?)", 0),
    ('kind = "exec" and loop_a', "macro 'loop_a' has errors (see its definition)", 18),
    ('broken', "macro 'broken' has errors (see its definition)", 0),
    ('dport', "'dport' is a field: compare it (`dport = ...`) or test `dport exists`", 0),
    ('kind = "exec" and dport = 25', "dport is only on connect, flow, dns events, never on exec: this is always false", 18),
])
def test_type_errors_carry_the_offset_of_what_is_wrong(condition, message, offset):
    assert (message, offset) in errors_of(condition)


def test_every_type_error_in_a_condition_is_reported():
    assert [offset for _, offset in errors_of('nope = 1 or dport = "x" or process.comm > 3')] == [0, 20, 27]


def test_macro_problems_are_reported_at_the_macro():
    compiler = Compiler(LISTS, MACROS)
    assert [error.message for error in compiler.macro_problems("loop_a")] == [
        "macro 'loop_a' refers to itself (through loop_a -> loop_b)"]
    assert [error.message for error in compiler.macro_problems("broken")] == ["unknown field 'nosuch.field'"]


# -- kinds, globs, templates -------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "kinds"), [
    ('kind = "exec" and process.comm = "x"', {"exec"}),
    ('kind in ("exec", "connect")', {"exec", "connect"}),
    ('dport = 25', {"connect", "flow", "dns"}),
    ('kind = "connect" or kind = "dns"', {"connect", "dns"}),
    ('process.comm = "x"', None),
    ('not kind = "exec"', None),
    ('dport != 25', None),
    ('kind = "exec" or process.comm = "x"', None),
    ('sni exists', {"flow"}),
])
def test_the_kinds_a_condition_can_match_index_it(condition, kinds):
    found = Compiler(LISTS, MACROS).compile(condition).kinds
    assert (None if found is None else set(found)) == kinds


def test_globs_translate_to_re2_without_backtracking_constructs():
    assert glob_to_re2("a*b?c[!x-z][]]d[") == r"a(?s:.*)b(?s:.)c[^x-z][\]]d\["
    assert glob_to_re2("x.y+(z)") == r"x\.y\+\(z\)"


def test_output_templates_substitute_fields_and_report_unknown_ones():
    template = compile_template("%sandbox.name ran %process.argv (100%%) by %process.ancestry.comm; %sni.")
    view = EventView(EXEC, FieldEnv({}, lambda rule_id: None))
    assert template.render(view) == ("sandbox-7 ran curl -s https://get.example.com/install.sh (100%) "
                                     "by bash systemd; <NA>.")
    with pytest.raises(ConditionError) as caught:
        compile_template("to %dport from %sandbox.nmae")
    assert (caught.value.message, caught.value.offset) == (
        "unknown field %sandbox.nmae (did you mean 'sandbox.name'?)", 15)


def test_kind_prefixed_names_hold_only_for_that_kind():
    assert holds('connect.dport = 25', CONNECT)
    assert holds('connect.daddr cidr "10.0.0.0/8" or process.comm = "nope"', CONNECT)
    flow = {**CONNECT, "kind": "flow"}
    assert not holds('connect.dport = 25 or process.comm = "nope"', flow)
    assert holds('flow.dport = 25', flow)
    assert Compiler(LISTS, MACROS).compile('dns.query endswith ".example"').kinds == {"dns"}
    assert ("connect.dport is only on connect events, never on flow: this is always false", 18) in errors_of(
        'kind = "flow" and connect.dport = 25')
