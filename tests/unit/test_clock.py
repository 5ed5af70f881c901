"""Event times: what the agent writes reads back exactly, by its fast path and the general one."""

from hypothesis import given, strategies as st

from ebpfguard import clock
from ebpfguard.clock import event_time_ns, rfc3339_ns


@given(st.integers(min_value=0, max_value=4_000_000_000 * clock.NS_PER_S))
def test_a_time_the_agent_wrote_reads_back_to_the_nanosecond(epoch_ns):
    assert event_time_ns(rfc3339_ns(epoch_ns)) == epoch_ns


@given(st.text(alphabet="0123456789-:.TtZz +", min_size=28, max_size=32))
def test_the_fast_path_agrees_with_the_general_parser(text):
    match = clock._RFC3339.match(text)
    general = None
    if match:
        whole, fraction, zone = match.groups()
        seconds = clock._epoch_s(whole, zone.upper())
        general = None if seconds is None else seconds * clock.NS_PER_S + int((fraction or "0").ljust(9, "0"))
    assert event_time_ns(text) == general
