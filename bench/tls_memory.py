"""What one held server-side TLS connection costs in native memory, without HTTP or asyncio.

Run: ``python bench/tls_memory.py [-n 3000] [--variant NAME ...]``

For each variant, in a fresh child process: N server connections on the server's real
context (:func:`build_server_context`, client CA configured) are handshaken in-process
over memory BIOs against stdlib ``ssl`` clients presenting a client certificate, then
carry one watch-like exchange (a GET in, a response head and one chunk out, through the
server's own :mod:`kcp_cache.server.tls._io`); the clients are dropped and the server
connections are held idle. Reported: RSS growth per held connection (after
``malloc_trim``), so each change to the TLS layer can be measured on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from OpenSSL import SSL

from kcp_cache.server import (
    build_server_context,
    ensure_dev_credentials,
    ensure_serving_certificate,
)
from kcp_cache.server.tls import make_tls_io

REQUEST = b"GET /watch HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
RESPONSE += b"transfer-encoding: chunked\r\n\r\n3\r\n{}\n\r\n"


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


def _heap_in_use_kib() -> int:
    """Bytes malloc has handed out and not got back (live memory, no fragmentation)."""
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) // 1024


def _trim() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _client_context(root: Path, tls12: bool, cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root / "apiserver.crt"))
    if cert:
        context.load_cert_chain(str(root / "admin.crt"), str(root / "admin.key"))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def _pump(client: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO, io: Any) -> None:
    """Move the client's pending bytes to the server and the server's back."""
    data = c_out.read()
    if data:
        io.feed(data)
    with contextlib.suppress(SSL.WantReadError):
        io.conn.do_handshake()
    back = io.drain()
    if back:
        c_in.write(back)


def one_connection(
    context: SSL.Context, client_ctx: ssl.SSLContext, after_handshake: Callable[[Any], None]
) -> Any:
    """A server connection handshaken with a client and carrying one exchange."""
    conn = SSL.Connection(context, None)
    conn.set_accept_state()
    io = make_tls_io(conn)
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    for _ in range(10):
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            _pump(client, c_in, c_out, io)
    else:
        raise RuntimeError("handshake did not finish")
    client.write(REQUEST)
    _pump(client, c_in, c_out, io)  # the client Finished (and its request)
    after_handshake(io)
    chunks, _ = io.read()
    if b"".join(chunks) != REQUEST:
        raise RuntimeError("request did not arrive")
    io.write(RESPONSE)
    c_in.write(io.drain())
    got = b""
    while len(got) < len(RESPONSE):
        got += client.read(65536)
    if got != RESPONSE:
        raise RuntimeError("response did not arrive")
    return io


VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no-client-cert": {"cert": False},
    "tls1.2": {"tls12": True},
}


def _variant_hook(name: str) -> Callable[[Any], None]:
    hook = getattr(sys.modules[__name__], f"hook_{name.replace('-', '_').replace('.', '')}", None)
    return hook if hook is not None else (lambda io: None)


def run_child(root: Path, variant: str, count: int) -> dict[str, Any]:
    spec = VARIANTS.get(variant, {})
    context = build_server_context(
        root / "apiserver.crt", root / "apiserver.key", root / "client-ca.crt"
    )
    client_ctx = _client_context(root, spec.get("tls12", False), spec.get("cert", True))
    hook = _variant_hook(variant)
    for _ in range(200):  # warm up allocator and caches; dropped again
        one_connection(context, client_ctx, hook)
    _trim()
    before, live_before = _rss_kib(), _heap_in_use_kib()
    held = [one_connection(context, client_ctx, hook) for _ in range(count)]
    _trim()
    after, live_after = _rss_kib(), _heap_in_use_kib()
    return {
        "live_kib_per_connection": (live_after - live_before) / count,
        "variant": variant,
        "connections": len(held),
        "kib_per_connection": (after - before) / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="connections per variant")
    parser.add_argument("--variant", action="append", help=f"one of {sorted(VARIANTS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.root, args.child, args.n)))
        return
    with tempfile.TemporaryDirectory(prefix="tls-memory-") as tmp:
        root = Path(tmp)
        serving, _ = ensure_serving_certificate(root)
        ensure_dev_credentials(root, "https://127.0.0.1:1", serving.cert)
        for variant in args.variant or list(VARIANTS):
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--root", str(root), "-n",
                 str(args.n)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            result = json.loads(out.stdout)
            print(
                f"{variant:24s} RSS {result['kib_per_connection']:5.1f} KiB, malloc'd "
                f"{result['live_kib_per_connection']:5.1f} KiB per connection"
            )


if __name__ == "__main__":
    main()
