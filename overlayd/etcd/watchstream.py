"""One etcd watch stream read by its own thread: its responses delivered, its first failure reported."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from overlayd.etcd.api import RegistryError, WatchCompacted
from overlayd.etcd.wire import WatchResult

# The registry's logger: a failed event handler is logged under the name operators already filter on.
log = logging.getLogger("overlayd.etcd.registry")


class WatchStream:
    """One etcd watch stream read by its own thread; reports its first failure, then ends.

    ``open_call(requests)`` opens the gRPC stream (the registry's: it knows the client library)
    and returns the call, an iterator of decoded ``WatchResult``; ``first_request`` (the
    ``WatchRequest`` that creates the watch) is the first of ``requests``.
    ``cancel()`` ends it quietly: no callback runs after cancel() returns, except one that had
    already started.
    """

    def __init__(
        self,
        open_call: Callable[[Iterator[Any]], Any],
        first_request: Any,
        on_response: Callable[[WatchResult], None],
        on_error: Callable[[RegistryError], None],
        where: str,
    ) -> None:
        self._on_response = on_response
        self._on_error = on_error
        self._where = where
        self._cancelled = threading.Event()
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put(first_request)
        self._call = open_call(iter(self._requests.get, None))
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch {where}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._call:
                if self._cancelled.is_set():
                    return
                if response.compact_revision:
                    self._fail(WatchCompacted(
                        f"{self._where}: start revision compacted (etcd compacted at "
                        f"{response.compact_revision})"
                    ))
                    return
                if response.canceled:
                    self._fail(RegistryError(f"{self._where}: cancelled by etcd: {response.cancel_reason}"))
                    return
                if response.events and not self._deliver(response):
                    return
        except grpc.RpcError as exc:
            self._fail(RegistryError(f"{self._where}: stream failed: {exc.code().name} {exc.details()}"))
            return
        self._fail(RegistryError(f"{self._where}: stream ended"))

    def _deliver(self, response: WatchResult) -> bool:
        """Hand events to the consumer; a consumer that raises ends the watch like an etcd error."""
        try:
            self._on_response(response)
        except Exception as exc:
            log.exception("%s: event handler failed", self._where)
            self._fail(RegistryError(f"{self._where}: event handler failed: {exc!r}"))
            return False
        return True

    def _fail(self, error: RegistryError) -> None:
        if not self._cancelled.is_set():
            self._on_error(error)

    def cancel(self) -> None:
        self._cancelled.set()
        self._requests.put(None)
        self._call.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
