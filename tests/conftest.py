"""Settings shared by every test."""

from hypothesis import HealthCheck, settings

# CI machines are shared and slow: property tests are bounded by example count, not by time.
settings.register_profile("ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")
