"""Detection: rules as data (ebpfguard/rules/*.yaml) run by small registered detectors.

Importing this package registers every detector module.
"""

from ebpfguard.detect import miner_exec  # noqa: F401
