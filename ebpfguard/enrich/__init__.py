"""Enrichment: give each decoded event its process (table, ancestry), its sandbox (cgroup,
pod), and what its bytes say on the wire (DNS, TLS)."""
