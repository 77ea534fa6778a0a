"""Shared fixtures: ledgers of each implementation, real Redis servers, stores of every kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from store_helpers import (
    STORE_KINDS,
    Backing,
    FakeClock,
    StoreMaker,
    backing_for,
    build_store,
    close_stores,
    store_params,
)

from engine.ledgers import make_ledger
from engine.redis_launcher import LocalRedisCluster, RedisServer
from engine.store.base import Store


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", 'redis: runs against a real redis-server or Redis Cluster (-m "not redis" leaves them out)'
    )


@pytest.fixture(params=["pure", "fast"])
def ledger(request: pytest.FixtureRequest):
    """An empty ledger of each implementation.

    The fast one is never skipped: an unbuilt extension makes ``make_ledger``
    raise, so those tests error out loudly (CI builds it). Run ``-k pure`` to
    work on the reference alone.
    """
    return make_ledger(request.param)


# ------------------------------------------------------------------ real Redis
#
# One standalone server and one 3-master cluster for the whole session, started
# on first use (a run without Redis-backed tests starts neither) and stopped at
# its end. Tests keep apart by namespace. A missing redis-server raises
# RedisNotInstalled here, so every test that needs it errors out: never a skip,
# in CI or anywhere else.


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3) as cluster:
        yield cluster


# ---------------------------------------------------------- stores of any kind


@pytest.fixture(params=store_params(*STORE_KINDS))
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each store kind: ``embedded-fast``, ``embedded-pure``, ``redis``, ``cluster``."""
    return str(request.param)


@pytest.fixture
def store_backing(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backing:
    """This test's backing: ``tmp_path / "data"``, or a namespace of its own on the session's Redis."""
    return backing_for(store_kind, request, tmp_path / "data")


@pytest_asyncio.fixture
async def make_store(store_backing: Backing) -> AsyncIterator[StoreMaker]:
    """``await make_store(clock=..., **config)``: a started store of this test's kind.

    Every store made in one test shares the test's backing, so a second one sees
    what the first left (close the first before, for the embedded store, which
    locks its directory). The clock defaults to a fresh :class:`FakeClock`;
    pass ``clock=time.time`` for the real one. All are closed at teardown.
    """
    opened: list[Store] = []

    async def make(*, clock: Callable[[], float] | None = None, **config: Any) -> Store:
        store = build_store(store_backing, clock=clock or FakeClock(), **config)
        await store.start()
        opened.append(store)
        return store

    yield make
    await close_stores(opened)
