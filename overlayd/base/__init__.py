"""Layer 0: small helpers every layer may use (atomic file writes, backoff, outage logging, netlink framing).

Imports nothing of overlayd but the package root's ``__version__``. Netlink framing lives here
because both ``backend/`` (rtnetlink) and ``netfilter/`` (nftables) speak it and may not import
each other.
"""
