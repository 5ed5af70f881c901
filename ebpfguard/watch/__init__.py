"""`ebpfguard watch`: the live terminal viewer on the agent's event socket."""
