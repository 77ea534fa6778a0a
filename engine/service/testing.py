"""A real engine server on a background thread, for tests and benchmarks.

The server gets its own event loop (uvloop by default, like production) in a
daemon thread, listens on a free loopback port, and is driven from the calling
thread with ordinary gRPC clients: every call crosses a real socket. Nothing in
the product imports this module.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from engine.config import ServerConfig
from engine.service.server import serve
from engine.store.base import Store

__all__ = ["ServerThread"]

T = TypeVar("T")


class ServerThread:
    """``with ServerThread(factory) as server: grpc.insecure_channel(server.target)``.

    ``store_factory`` runs on the server's loop and returns a started store (or
    an awaitable of one), as for :func:`engine.service.server.run`; the store is
    closed after the server stopped. ``clock`` (default: the real one) dates
    quotes; give the store the same one to pin all of the engine's time.
    """

    def __init__(
        self,
        store_factory: Callable[[], Store | Awaitable[Store]],
        config: ServerConfig | None = None,
        *,
        use_uvloop: bool = True,
        start_timeout_s: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config or ServerConfig(listen="127.0.0.1:0", grace_s=1.0)
        self._store_factory = store_factory
        self._clock = clock
        self._use_uvloop = use_uvloop
        self._start_timeout_s = start_timeout_s
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="engine-server", daemon=True)
        self.store: Store | None = None
        self.port = 0

    @property
    def target(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self._start_timeout_s):
            raise TimeoutError("the engine server did not start in time")
        if self._error is not None:
            raise RuntimeError("the engine server failed to start") from self._error
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the server's loop (e.g. to read the store directly)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Graceful shutdown (health NOT_SERVING, grace for in-flight calls), then close the store."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError("the engine server did not stop in time")

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _main(self) -> None:
        if self._use_uvloop:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        else:
            runner = asyncio.Runner()
        with runner:
            try:
                runner.run(self._serve())
            except BaseException as exc:
                if not self._ready.is_set():
                    self._error = exc
                    self._ready.set()
                else:
                    raise

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        started = asyncio.Event()
        made = self._store_factory()
        store: Store = await made if inspect.isawaitable(made) else made
        self.store = store
        try:
            clock_kw = {} if self._clock is None else {"clock": self._clock}
            task = asyncio.create_task(
                serve(self.config, store, started=started, stop=self._stop, on_bound=self._bound, **clock_kw)
            )
            waiter = asyncio.create_task(started.wait())
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                waiter.cancel()
                await task  # raises the start-up error
            self._ready.set()
            await task
        finally:
            await store.close()

    def _bound(self, port: int) -> None:
        self.port = port
