"""Fuzzing the condition parser and compiler: any text is a tree or a positioned error, never a
crash or a hang (hypothesis's deadline is the per-input time budget), and compiled conditions
never raise on hostile events."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpfguard.detect.compiler import Compiler, Errors
from ebpfguard.detect.fields import FIELDS, EventView, FieldEnv
from ebpfguard.detect.language import COMPARISONS, ConditionError, parse

BUDGET = settings(deadline=1000, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
LISTS = {"names": ("a", "b"), "ports": (1, 2)}
MACROS = {"m": 'kind = "exec"'}
PIECES = st.sampled_from([
    "kind", "dport", "process.comm", "process.argv", "sandbox.name", "daddr", "m", "nope", "@names", "@ports",
    *COMPARISONS, "exists", "and", "or", "not", "(", ")", "[", "]", ",", '"x"', "'y'", '"\\d+"', "25", "-1",
    "0.5", "true", '"10.0.0.0/8"', '"sandbox-*"', '"(a)\\\\1"', '"', "\\", "\n", " ",
])


def check_text(text: str) -> None:
    try:
        parse(text)
    except ConditionError as error:
        assert 0 <= error.offset <= len(text)
    try:
        Compiler(LISTS, MACROS).compile(text)
    except Errors as found:
        assert found.errors and all(0 <= error.offset <= len(text) for error in found.errors)


@BUDGET
@given(st.text(max_size=400))
def test_arbitrary_text_parses_or_fails_with_a_position(text):
    check_text(text)


@BUDGET
@given(st.lists(PIECES, max_size=60).map(" ".join))
def test_token_soup_parses_or_fails_with_a_position(text):
    check_text(text)


@st.composite
def conditions(draw, depth=0):
    """Well-formed conditions over real fields."""
    if depth < 3 and draw(st.booleans()):
        joiner = draw(st.sampled_from([" and ", " or "]))
        parts = draw(st.lists(conditions(depth + 1), min_size=1, max_size=3))
        text = joiner.join(f"({part})" for part in parts)
        return f"not {text}" if draw(st.booleans()) else text
    field = draw(st.sampled_from([f for f in FIELDS if f.element_type in ("str", "int")]))
    if field.element_type == "int":
        return f"{field.name} {draw(st.sampled_from(['=', '!=', '<', '>=']))} {draw(st.integers(-5, 70000))}"
    op = draw(st.sampled_from(["=", "!=", "contains", "startswith", "glob", "pmatch", "regex"]))
    value = draw(st.sampled_from(field.values or ("sandbox-*", "/usr", "(a|b)+c", "x")))
    return f'{field.name} {op} "{value}"'


HOSTILE_TEXT = st.one_of(st.text(max_size=2000), st.just("a" * 100000), st.just("sandbox-" + "*" * 5000))
HOSTILE_VALUE = st.one_of(HOSTILE_TEXT, st.integers(), st.none(), st.booleans(), st.lists(HOSTILE_TEXT, max_size=5),
                          st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))


@st.composite
def hostile_events(draw):
    return {
        "kind": draw(st.sampled_from(["exec", "connect", "flow", "open", "dns", "other"])),
        "dport": draw(HOSTILE_VALUE), "daddr": draw(HOSTILE_VALUE), "filename": draw(HOSTILE_VALUE),
        "payload_b64": draw(HOSTILE_VALUE), "sni": draw(HOSTILE_VALUE),
        "sandbox": draw(st.one_of(HOSTILE_VALUE, st.fixed_dictionaries({"name": HOSTILE_VALUE}))),
        "process": draw(st.one_of(HOSTILE_VALUE, st.fixed_dictionaries({
            "comm": HOSTILE_VALUE, "argv": HOSTILE_VALUE, "exe": HOSTILE_VALUE,
            "ancestry": st.one_of(HOSTILE_VALUE, st.lists(st.fixed_dictionaries({"comm": HOSTILE_VALUE}), max_size=4)),
        }))),
    }


@BUDGET
@given(conditions(), hostile_events())
def test_compiled_conditions_evaluate_hostile_events_without_raising(condition, event):
    try:
        compiled = Compiler(LISTS, MACROS).compile(condition)
    except Errors:
        return  # e.g. a field no event of the condition's kinds carries
    assert compiled.matches(EventView(event, FieldEnv({}, lambda rule_id: None))) in (True, False)
