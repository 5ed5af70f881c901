"""ebpfguard: catch rogue sandboxed AI agents (miners, reverse tunnels) from the kernel."""

__version__ = "0.1.0"
