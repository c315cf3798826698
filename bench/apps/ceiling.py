"""The ceiling of our HTTP stack: a trivial ASGI app on the server's own TLS + uvicorn stack.

Run: ``python bench/apps/ceiling.py --root DIR --port-file FILE --body GET_BODY [--list-body F]``

It serves the same :class:`kcp_cache.server.HTTPSServer` (uvicorn's httptools protocol
under our pyOpenSSL layer, client certificates requested and verified against the client
CA in ``DIR``) with the same serving certificate as ``kcp-cache-server --root-directory
DIR``, on uvloop — everything the real server has except the application:

* ``GET /list`` answers the pre-encoded bytes of ``--list-body`` (a LIST response
  captured from the server: the floor for sending those bytes over TLS);
* ``GET /watch`` starts a chunked stream, sends one line and holds it until the client
  goes away (the floor for an idle watch stream: what the server stack alone keeps per
  held stream);
* any other request reads its whole body (a POST's 1 KiB object) and answers the
  pre-encoded bytes of ``--body`` (a GET response captured from the server, 1 KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import uvloop

from kcp_cache.server import HTTPSServer, bind_socket, build_server_context


def make_app(body: bytes, list_body: bytes) -> Any:
    def headers(payload: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]

    plain, listed = headers(body), headers(list_body)
    stream = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/watch":
            await send({"type": "http.response.start", "status": 200, "headers": stream})
            await send({"type": "http.response.body", "body": b"{}\n", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if scope["method"] != "GET":
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
        if scope["path"] == "/list":
            payload, head = list_body, listed
        else:
            payload, head = body, plain
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": payload})

    return app


async def serve(args: argparse.Namespace, body: bytes, list_body: bytes) -> None:
    root = Path(args.root)
    context = build_server_context(
        root / "apiserver.crt", root / "apiserver.key", root / "client-ca.crt"
    )
    sock = bind_socket("127.0.0.1", 0)
    server = HTTPSServer(make_app(body, list_body), sock=sock, ssl_context=context)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.request_exit)
    port_file = Path(args.port_file)
    await loop.run_in_executor(None, port_file.write_text, f"{server.port}\n")
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--list-body")
    args = parser.parse_args()
    body = Path(args.body).read_bytes()
    list_body = Path(args.list_body).read_bytes() if args.list_body else b"{}"
    uvloop.run(serve(args, body, list_body))


if __name__ == "__main__":
    main()
