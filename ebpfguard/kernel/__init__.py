"""Kernel side: build and load the probes (bpf/), attach them through BPF links, and decode
the records they write into typed events."""
