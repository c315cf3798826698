"""Black-box servers on etcd: one etcd for the whole session and fixtures that choose the
storage flags, so any black-box test can run against the embedded store *and* etcd.

``tests/conftest.py`` re-exports the fixtures; a test module opts in by asking for one::

    @pytest.fixture
    def server(cache_server, storage_flags):      # runs each test as [sqlite] and [etcd]
        return cache_server(*storage_flags)

    @pytest.fixture(scope="module")
    def server(tmp_path_factory, module_storage_flags):  # one server per backend and module
        ...

The ``etcd`` variant is marked ``etcd`` (deselect with ``-m "not etcd"``). Every server
gets its own random ``--etcd-prefix`` on the shared single-member etcd, so servers of
different tests never see each other's keys, and the etcd starts (about 0.1 s) only when
the first ``[etcd]`` test needs it. Tests that kill, pause or compact etcd must start
their own cluster (``kcp_cache.testing.running_etcd``) instead of using the shared one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import pytest

from kcp_cache.testing import EtcdCluster

__all__ = [
    "STORAGE_BACKENDS",
    "EtcdKey",
    "SharedEtcd",
    "etcd_get_prefix",
    "module_storage_flags",
    "run_sync",
    "shared_etcd",
    "storage_flags",
    "unique_prefix",
]

#: Parameters for a fixture that picks the server's store.
STORAGE_BACKENDS: Final = ("sqlite", pytest.param("etcd", marks=pytest.mark.etcd))

_T = TypeVar("_T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from synchronous code (a sync fixture or test).

    It runs on its own thread and loop, so it neither needs nor disturbs the event loop
    pytest-asyncio may have set for the current thread.
    """
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="run-sync")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def unique_prefix(stem: str = "/kcp-test") -> str:
    """A fresh ``--etcd-prefix`` (never a prefix of another one, nor of ``/cache``)."""
    return f"{stem}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class EtcdKey:
    """One key as ``etcdctl get -w json`` reports it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    def json(self) -> Any:
        return json.loads(self.value)


def etcd_get_prefix(endpoints: Sequence[str], prefix: str) -> list[EtcdKey]:
    """Every key under ``prefix``, read with Debian's ``etcdctl`` (etcd's own tool, so
    what it shows is what any other etcd client — a Go kcp — would read)."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    out = subprocess.run(
        ["etcdctl", f"--endpoints={','.join(endpoints)}", "get", "--prefix", prefix, "-w", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=30,
    ).stdout
    kvs = json.loads(out).get("kvs", [])
    return [
        EtcdKey(
            key=base64.b64decode(kv["key"]).decode(),
            value=base64.b64decode(kv.get("value", "")),
            create_revision=int(kv["create_revision"]),
            mod_revision=int(kv["mod_revision"]),
            version=int(kv["version"]),
        )
        for kv in kvs
    ]


class SharedEtcd:
    """The session's etcd: hands out server flags with a prefix of their own."""

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    def flags(self, prefix: str | None = None) -> tuple[str, ...]:
        """``--etcd-servers … --etcd-prefix …`` (a fresh prefix unless one is given)."""
        return (
            "--etcd-servers",
            ",".join(self.endpoints),
            "--etcd-prefix",
            prefix or unique_prefix(),
        )

    def get_prefix(self, prefix: str) -> list[EtcdKey]:
        return etcd_get_prefix(self.endpoints, prefix)


@pytest.fixture(scope="session")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedEtcd]:
    """A single-member etcd for the session (started on first use)."""
    cluster = EtcdCluster(1, base_dir=tmp_path_factory.mktemp("shared-etcd"))
    run_sync(cluster.start)
    try:
        yield SharedEtcd(cluster)
    finally:
        cluster.stop()


def _flags(request: pytest.FixtureRequest) -> tuple[str, ...]:
    if request.param == "sqlite":
        return ()
    shared: SharedEtcd = request.getfixturevalue("shared_etcd")
    return shared.flags()


@pytest.fixture(params=STORAGE_BACKENDS)
def storage_flags(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Extra server flags: ``()`` for the embedded SQLite default, or etcd flags."""
    return _flags(request)


@pytest.fixture(scope="module", params=STORAGE_BACKENDS)
def module_storage_flags(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """:func:`storage_flags` for module-scoped servers."""
    return _flags(request)
