"""The text kube-apiserver's ``/healthz``, ``/livez`` and ``/readyz`` answer with.

One line per check — ``[+]name ok``, ``[-]name failed`` (``: reason`` when the caller may
see it), ``[+]name excluded: ok`` for a check left out with ``?exclude=`` — then
``<endpoint> check passed`` or ``<endpoint> check failed``. Probes and humans read these
lines, so the cache server and the replicator's health endpoint write them alike.

>>> health_report("readyz", [check_line("etcd", ok=True), check_line("bootstrap", ok=False)])
b'[+]etcd ok\\n[-]bootstrap failed\\nreadyz check failed\\n'
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["check_line", "excluded_line", "health_report"]


def check_line(name: str, *, ok: bool, reason: str | None = None) -> str:
    """One check's line; ``reason`` is appended to a failure when given."""
    if ok:
        return f"[+]{name} ok"
    return f"[-]{name} failed" if reason is None else f"[-]{name} failed: {reason}"


def excluded_line(name: str) -> str:
    """The line for a check the request excluded (kube reports it as passing)."""
    return f"[+]{name} excluded: ok"


def health_report(endpoint: str, lines: Iterable[str], *, failed: bool | None = None) -> bytes:
    """The whole body: ``lines`` and the verdict for ``endpoint`` (``"readyz"``…).

    The verdict is ``failed`` when given, else whether any line reports a failure.
    """
    body = list(lines)
    if failed is None:
        failed = any(line.startswith("[-]") for line in body)
    body.append(f"{endpoint} check {'failed' if failed else 'passed'}")
    return ("\n".join(body) + "\n").encode()
