"""The watches' event loop: one thread running asyncio, owned by the catalog watcher (adapter).

The rest of the daemon is synchronous (the apply loop, HAProxy's sockets, the CS file), so
the loop lives in its own thread and is reached only through two doors: ``call`` runs a plain
function on it, ``close`` cancels every task, waits for them to finish their cancellation
(parked requests are closed, nothing is abandoned) and ends the thread. A SIGHUP that changes
``[consul]`` closes the old loop this way before the new watcher starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class EventLoopThread:
    def __init__(self, name: str = "consul-watches") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def call(self, func: Callable[[], None]) -> None:
        """Run ``func`` on the loop's thread, soon (no-op once closed)."""
        if not self._closed:
            self.loop.call_soon_threadsafe(func)

    def close(self, cleanup: Callable[[], Awaitable[None]] | None, timeout: float = 15.0) -> None:
        """Cancel every task, await ``cleanup`` (closing the HTTP pool), stop, join."""
        if self._closed or not self._thread.is_alive():
            self._closed = True
            return
        self._closed = True

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if cleanup is not None:
                await cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout)
        except TimeoutError:  # a stuck cleanup must not keep the daemon from going on
            log.warning("closing the watch loop: not done after %g s; going on", timeout)
        except Exception as exc:
            log.warning("closing the watch loop: %s: %s", type(exc).__name__, exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
