"""The benchmark's statistics helpers (the benchmark itself is never run by the tests)."""

import pytest

from bench.stats import percentile, ratio, rfc3339_ns, summarize


def test_summarize_gives_median_and_range():
    s = summarize([5.0, 1.0, 3.0, 100.0])
    assert (s.median, s.low, s.high, s.n) == (4.0, 1.0, 100.0, 4)


def test_summarize_of_nothing_is_none():
    assert summarize([]) is None


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_rfc3339_ns_keeps_nanoseconds():
    assert rfc3339_ns("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert rfc3339_ns("2026-01-02T03:04:05.123456789Z") % 1_000_000_000 == 123_456_789
    assert rfc3339_ns("1970-01-01T00:00:02Z") == 2_000_000_000
    with pytest.raises(ValueError):
        rfc3339_ns("1970-01-01T00:00:02+01:00")


def test_ratio_guards_missing_and_zero_bases():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, 0.0) is None
