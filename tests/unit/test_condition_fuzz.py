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


WORDS = ["sandbox-a", "sandbox-ab", "sandbox-b/x", "/usr/bin/curl", "/usr/bin", "curl", "ab", "", "10.0.0.1",
         "::ffff:10.0.0.1", "x.example", "a.x.example"]
NUMBERS = [0, 25, 443, -1]


@st.composite
def indexable_conditions(draw):
    """Conditions of the shapes the engine's index files rules by, plus others."""
    parts = []
    if draw(st.booleans()):
        parts.append(f'kind = "{draw(st.sampled_from(["exec", "connect", "flow"]))}"')
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(["sandbox.name", "process.comm", "process.exe", "process.argv", "filename",
                                      "daddr", "dport", "process.ancestry.comm"]))
        if field == "dport":
            parts.append(draw(st.sampled_from(["dport = 25", "dport in (25, 443)", "dport != 443", "dport > 24"])))
            continue
        op = draw(st.sampled_from(["=", "startswith", "endswith", "glob", "pmatch", "in"] if field != "daddr" else ["=", "in"]))
        value = draw(st.sampled_from(WORDS if field != "daddr" else ["10.0.0.1", "::ffff:10.0.0.1"]))
        value = f"{value[:4]}*" if op == "glob" and draw(st.booleans()) else value
        parts.append(f'{field} {op} ("{value}", "zz")' if op == "in" else f'{field} {op} "{value}"')
        if draw(st.booleans()):
            parts[-1] = f"not {parts[-1]}"
    return " and ".join(parts)


@st.composite
def word_events(draw):
    word = st.sampled_from(WORDS)
    return {"kind": draw(st.sampled_from(["exec", "connect", "flow", "dns"])), "dport": draw(st.sampled_from(NUMBERS)),
            "daddr": draw(word), "filename": draw(word), "sandbox": {"name": draw(word)},
            "process": {"comm": draw(word), "exe": draw(word), "argv": draw(st.lists(word, max_size=3)),
                        "ancestry": [{"comm": draw(word)}]}}


@settings(deadline=2000, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(indexable_conditions(), min_size=1, max_size=8), st.lists(word_events(), min_size=1, max_size=6))
def test_the_rule_index_never_hides_a_rule_that_matches(conditions, events):
    from ebpfguard.detect.engine import DetectionEngine
    from ebpfguard.detect.rulefile import RuleSet, Rule
    from ebpfguard.detect.userrules import ConditionRule

    compiler = Compiler({}, {})
    rules = []
    for index, condition in enumerate(conditions):
        try:
            compiled = compiler.compile(condition)
        except Errors:
            continue
        rules.append(Rule(id=f"u.{index}", description="x", severity="low", tags=(), enabled=True, evidence=(),
                          params={}, allow=(), origin="x:1",
                          condition=ConditionRule(compiled, None, ())))
    engine = DetectionEngine(RuleSet(rules=tuple(rules)))
    env = FieldEnv({}, lambda rule_id: None)
    for event in events:
        expected = [rule.id for rule in rules if rule.condition.compiled.matches(EventView(event, env))]
        assert [alert["rule"] for alert in engine.process(event)] == expected
