"""rtnetlink for the backend: the message codec (links, addresses, routes, neighbours) and the socket.

Part of layer 2 (``overlayd.backend``): may import ``overlayd.base`` and ``overlayd.backend.desired``
(the entry types it encodes).
"""
