"""ebpfguard's benchmark: overhead, throughput, latency and footprint against peers and floors.

Run it with `make bench` (see bench/README.md); it is not part of the test suite.
"""
