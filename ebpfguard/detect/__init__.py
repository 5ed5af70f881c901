"""Detection: rules as data (ebpfguard/rules/*.yaml) run by small registered detectors.

Importing this package registers every detector module.
"""

from ebpfguard.detect import egress_internal, gpu_use, miner_exec, miner_stratum, tunnel_other, tunnel_ssh  # noqa: F401
