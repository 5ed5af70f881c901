"""Detection: rules as data (ebpfguard/rules/*.yaml) run by small registered detectors.

Importing this package registers every detector module.
"""

from ebpfguard.detect import (  # noqa: F401
    agent_flooded, agent_tamper, egress_internal, gpu_use, miner_binary, miner_exec, miner_pool,
    miner_stratum, miner_tuning, sandbox_escape, tunnel_other, tunnel_ssh,
)
