"""What passing a connection to a sibling worker costs, against accepting it.

Run: ``.venv/bin/python bench/balance_bench.py [--connections N] [--rounds R]``

Two :class:`~kcp_cache.server.ConnectionBalancer` of one group in this process (as two
``--workers`` would be, each with its datagram socket and slot in the shared file) and a
real TCP listener. Each round opens ``--connections`` TCP connections and, one
connection at a time:

* **reference**: ``accept()`` alone — what any worker pays for a connection;
* **kept**: ``accept()`` and ``place()`` deciding to keep it (the balanced case: the
  shared counts read and this worker's published);
* **moved**: ``accept()``, ``place()`` passing it (``sendmsg`` with ``SCM_RIGHTS``,
  ``close``) and the sibling's receive (``recvmsg``, the socket object) — the whole
  cost of a connection that moves, both sides.

Reported: µs of CPU per connection for each, and the ratios to the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kcp_cache.server import ConnectionBalancer


def cpu() -> float:
    return time.process_time()


async def one_round(directory: str, connections: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    served: list[list[socket.socket]] = [[], []]
    held = [0]  # connections the sender holds beyond these (so that it passes them)
    sender = ConnectionBalancer(directory, 0, 2, lambda: len(served[0]) + held[0])
    receiver = ConnectionBalancer(directory, 1, 2, lambda: len(served[1]))
    sender.start(loop, served[0].append)
    receiver.start(loop, served[1].append)
    figures: dict[str, float] = {}
    with socket.create_server(("127.0.0.1", 0), backlog=connections) as listener:
        address = listener.getsockname()
        try:
            for case in ("reference", "kept", "moved"):
                clients = [socket.create_connection(address) for _ in range(connections)]
                spent = 0.0
                for _ in range(connections):
                    started = cpu()
                    conn, _ = listener.accept()
                    if case == "reference":
                        served[0].append(conn)
                    elif case == "kept":
                        # The sibling holds as many: the balanced case, nothing moves.
                        receiver._slots[1] = len(served[0]) + 1
                        if not sender.place(conn):
                            served[0].append(conn)
                    else:
                        held[0] = 10
                        receiver._slots[1] = 0  # always fewer there
                        assert sender.place(conn)
                        receiver._receive()  # its loop's reader, run here
                    spent += cpu() - started
                figures[case] = spent / connections * 1e6
                for sock in clients + served[0] + served[1]:
                    sock.close()
                served[0].clear()
                served[1].clear()
        finally:
            sender.close()
            receiver.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="balance-bench-") as directory:
            figures = asyncio.run(one_round(directory, args.connections))
        rounds.append(figures)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:.1f} µs" for k, v in figures.items()),
              file=sys.stderr)  # fmt: skip
    summary = {case: statistics.median(r[case] for r in rounds) for case in rounds[0]}
    summary["kept_ratio"] = summary["kept"] / summary["reference"]
    summary["moved_ratio"] = summary["moved"] / summary["reference"]
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
