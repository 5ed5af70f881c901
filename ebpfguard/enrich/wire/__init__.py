"""Parsers of what the kernel copies off the wire: DNS messages and TLS ClientHellos.

Their input is whatever a sandboxed process chose to send (or a server chose to answer), so
each parser bounds its work by the input's length and fails in one documented way.
"""
