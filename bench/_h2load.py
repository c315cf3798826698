"""h2load (Debian's ``nghttp2-client``) as a load generator that presents a client
certificate.

h2load is written in C and costs ~30 µs of CPU per HTTP/1.1 request on this machine,
where autocannon (node) costs 50–150 µs: on two cores shared by the server and its load
generator, that difference is what bounds a two-process server's speed-up. h2load has
no client-certificate option, so it runs with ``_client_cert_shim.c`` preloaded (built
here once with the system C compiler), which loads the admin certificate into every
OpenSSL context and verifies the server against the cache's CA.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kcp-cache-bench"

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def available() -> bool:
    """Whether h2load and a C compiler are installed (``apt-get install nghttp2-client``)."""
    return shutil.which("h2load") is not None and shutil.which("cc") is not None


def ensure_shim() -> Path:
    """The preload shim, compiled once into the bench cache directory."""
    source = BENCH / "_client_cert_shim.c"
    target = CACHE_DIR / "client_cert_shim.so"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O2", "-o", str(target), str(source), "-ldl"],
            check=True,
            capture_output=True,
        )
    return target


def h2load(
    root: Path,
    url: str,
    *,
    duration: float,
    connections: int = 64,
    http2: bool = False,
    streams: int = 1,
    cert: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """One h2load run, flat out for ``duration`` seconds: HTTP/1.1 keep-alive, one
    request in flight per connection (no pipelining), or HTTP/2 with *streams* requests
    in flight on each connection; presenting *cert* and *key* (default: the admin's)."""
    if streams != 1 and not http2:
        raise ValueError("HTTP/1.1 runs keep one request in flight per connection")
    env = dict(
        os.environ,
        LD_PRELOAD=str(ensure_shim()),
        KCP_BENCH_CERT=cert or str(root / "admin.crt"),
        KCP_BENCH_KEY=key or str(root / "admin.key"),
        KCP_BENCH_CA=str(root / "apiserver.crt"),
    )
    args = ["h2load", "-c", str(connections), "-m", str(streams), "-D", f"{duration:g}"]
    if not http2:
        args.append("--h1")
    done = subprocess.run(
        [*args, url],
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + 120,
        check=False,
    )
    out = done.stdout
    finished, requests, status = _FINISHED.search(out), _REQUESTS.search(out), _STATUS.search(out)
    if done.returncode != 0 or not (finished and requests and status):
        raise RuntimeError(f"h2load failed ({done.returncode}): {out[-2000:]} {done.stderr}")
    seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    succeeded = int(requests[4])
    return {
        "requests": succeeded,
        "duration": seconds,
        "rps": succeeded / seconds,
        "non2xx": int(status[2]) + int(status[3]) + int(status[4]),
        "errors": int(requests[5]) + int(requests[6]) + int(requests[7]),
    }
