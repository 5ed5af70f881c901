"""The probe sources (C), shipped inside the package as `ebpfguard.bpf`.

bpf/ at the top of the repository is their only copy: pyproject.toml maps this directory to
the `ebpfguard.bpf` package, so wheels, sdists and editable installs all carry it, and
ebpfguard/kernel/events.py finds it with importlib.resources wherever the package lives.
"""
