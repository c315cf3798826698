"""What scoped authorization and the audit log cost, in CPU instructions per GET.

A load-independent companion of ``authz_audit_bench.py``: on a machine shared with other
work, CPU time per request moves by ±30 % from run to run, but the number of
instructions a request executes does not. Each variant runs the whole in-process stack
(``create_app`` → filters → API → registry → memory store; no sockets, no TLS) under
valgrind's ``cachegrind`` (instruction counts only), twice — with a warm-up's worth of
GETs and with ``--requests`` more — and the difference divided by ``--requests`` is the
cost of one GET, start-up excluded:

* ``kcp`` — ``--authorization-mode kcp``, an admin, no audit log (the reference);
* ``scoped`` — the default mode, shard ``amber``'s user;
* ``scoped + audit`` — and the audit log, its writer thread included;
* ``audit: request path`` — the same, with the writer thread never started (its buffer
  only fills), so the request path's share and the writer's can be told apart.

``--baseline DIR`` runs the ``kcp_cache`` package found in ``DIR`` (e.g. a ``git archive``
of ``main``'s ``src``) as well, for a before/after in one run.

``--real`` counts the real ``kcp-cache-server`` instead — TLS, the HTTP layer, the writer
thread and the file writes' user-space part — with GETs over one keep-alive connection
(``kcp`` mode with the admin certificate, the same with the audit log, ``scoped`` + audit
with shard ``amber``'s certificate). Its ratio is what ``authz_audit_bench.py`` would
report if every instruction cost the same time; the gap between the two says how much
slower the audit's instructions (interpreted Python) run than the average of a GET
(much of it OpenSSL and llhttp in C). Needs ``valgrind``.

    .venv/bin/python bench/audit_instructions_bench.py [--requests 4000] [--baseline DIR] [--real]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Runs under valgrind, against whichever ``kcp_cache`` PYTHONPATH selects.
WORKER = r"""
import asyncio, gc, sys, tempfile
from pathlib import Path
import orjson
from kcp_cache.registry import Bootstrapper, Registry, ResourceCatalog
from kcp_cache.audit import AuditLog, AuditOptions
from kcp_cache.server import User, create_app
from kcp_cache.server.api import create_api_app
from kcp_cache.storage import MemoryStorage

N, VARIANT = int(sys.argv[1]), sys.argv[2]
PATH = "/services/cache/shards/amber/clusters/bench/apis/apis.kcp.io/v1alpha2/apiexports"
USER = (User("admin", ("system:masters",)) if VARIANT == "kcp"
        else User("system:kcp:shard:amber", ("system:kcp:shards",)))
HEADERS = [(b"host", b"127.0.0.1:6443"), (b"user-agent", b"bench/1.0"),
           (b"accept", b"application/json")]


async def authenticate(scope):
    return USER


async def call(app, method, path, body=b""):
    status = []
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}
    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
    scope = {"type": "http", "method": method, "path": path, "query_string": b"",
             "headers": HEADERS + ([(b"content-type", b"application/json")] if body else []),
             "client": ("127.0.0.1", 50000), "http_version": "1.1"}
    await app(scope, receive, send)
    return status[0]


async def main():
    storage = MemoryStorage()
    await storage.start()
    catalog = ResourceCatalog()
    api = create_api_app(Registry(storage, catalog), bootstrapper=Bootstrapper(storage, catalog))
    audit = None
    if VARIANT.startswith("audit"):
        audit = AuditLog(AuditOptions(str(Path(tempfile.mkdtemp()) / "audit.log"),
                                      buffer_events=10**9))
        if VARIANT == "audit":
            audit.open()
    app = create_app(storage=storage, api_app=api, authenticator=authenticate,
                     authorization_mode="kcp" if VARIANT == "kcp" else "scoped", audit=audit)
    await api.startup()
    body = orjson.dumps({"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport",
                         "metadata": {"name": "one"}, "spec": {"pad": "p" * 700}})
    while await call(app, "POST", PATH, body) != 201:
        await asyncio.sleep(0.05)
    for _ in range(N):
        assert await call(app, "GET", PATH + "/one") == 200
    if audit is not None and VARIANT == "audit":
        audit.close()


gc.freeze()
gc.set_threshold(100_000, 10, 10)  # as kcp-cache-server runs
asyncio.run(main())
"""

VARIANTS = {
    "kcp": "kcp",
    "scoped": "scoped",
    "scoped + audit": "audit",
    "audit: request path": "audit-request-path",
}
WARM_UP = 500


def instructions(python: str, src: Path | None, requests: int, variant: str) -> int:
    """Instructions executed by one worker run (valgrind's ``I refs``)."""
    env = {**os.environ}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
        script.write(WORKER)
        script.flush()
        done = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             python, script.name, str(requests), variant],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_request(python: str, src: Path | None, requests: int, variant: str) -> float:
    warm = instructions(python, src, WARM_UP, variant)
    full = instructions(python, src, WARM_UP + requests, variant)
    return (full - warm) / requests


REAL_VARIANTS = {
    "kcp": ("--authorization-mode", "kcp"),
    "kcp + audit": ("--authorization-mode", "kcp", "--audit-log-path", "{audit}"),
    "scoped + audit": ("--audit-log-path", "{audit}"),
}


def real_server_instructions(flags: tuple[str, ...], requests: int) -> int:
    """Instructions the real server executes from start to shutdown, with ``requests``
    GETs over one TLS keep-alive connection in between (valgrind's ``I refs``)."""
    import ssl

    import httpx2

    from _procs import client
    from authz_audit_bench import PATH, export, shard_certificate
    from kcp_cache.testing import CacheServer

    with tempfile.TemporaryDirectory(prefix="kcp-audit-instr-") as tmp:
        work = Path(tmp)
        root = work / "server"
        args = tuple(flag.format(audit=work / "audit.jsonl") for flag in flags)
        log = work / "valgrind.txt"
        valgrind = ("valgrind", "--tool=cachegrind", "--cache-sim=no",
                    "--cachegrind-out-file=/dev/null", f"--log-file={log}")  # fmt: skip
        server = CacheServer(root, ("--storage", "memory", *args), None, command_prefix=valgrind)
        server.start(timeout=600)
        try:
            with client(root, server.port, timeout=120) as http:
                answer = http.post(PATH.format(cluster="bench"), json=export("one"))
                assert answer.status_code == 201, answer.text
            if "--authorization-mode" in args:  # kcp mode: the admin, as the reference
                reader = client(root, server.port, timeout=120)
            else:  # scoped: a shard's certificate
                cert = shard_certificate(root)
                context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
                context.load_cert_chain(cert["cert"], cert["key"])
                reader = httpx2.Client(
                    base_url=f"https://127.0.0.1:{server.port}", verify=context, timeout=120
                )
            with reader as http:
                for _ in range(requests):
                    answer = http.get(PATH.format(cluster="bench") + "/one")
                    assert answer.status_code == 200, answer.text
        finally:
            server.stop()
        text = log.read_text()
    found = re.search(r"I\s+refs:\s+([\d,]+)", text)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {text[-2000:]}")
    return int(found.group(1).replace(",", ""))


def real_main(requests: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    counts = {}
    for name, flags in REAL_VARIANTS.items():
        warm = real_server_instructions(flags, WARM_UP)
        full = real_server_instructions(flags, WARM_UP + requests)
        counts[name] = (full - warm) / requests
    reference = counts["kcp"]
    print(f"real server: instructions per GET ({requests} GETs over TLS, one connection)")
    for name, count in counts.items():
        print(f"  {name:20} {count / 1000:7.1f}k  kcp/this {reference / count:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--baseline", type=Path, help="a tree's src/ to measure as well")
    parser.add_argument("--real", action="store_true", help="count the real server over TLS")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    if args.real:
        real_main(args.requests)
        return
    trees: dict[str, Path | None] = {"this tree": None}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    for tree, src in trees.items():
        counts = {
            name: per_request(sys.executable, src, args.requests, variant)
            for name, variant in VARIANTS.items()
        }
        reference = counts["kcp"]
        print(f"{tree}: instructions per GET ({args.requests} GETs, in-process stack)")
        for name, count in counts.items():
            print(f"  {name:20} {count / 1000:7.1f}k  kcp/this {reference / count:.3f}")
        audit = counts["scoped + audit"] - counts["scoped"]
        path = counts["audit: request path"] - counts["scoped"]
        print(
            f"  the audit log: {audit / 1000:.1f}k per GET "
            f"(request path {path / 1000:.1f}k, writer thread {(audit - path) / 1000:.1f}k)"
        )


if __name__ == "__main__":
    main()
