"""Kubernetes ``Status`` bodies as kube-apiserver sends them, written out once.

The server's tests compare what it answers with these; the client's tests feed them to
the client as a fake server. Both sides then agree with kube's wire shape, not with each
other's code.
"""

from __future__ import annotations

from typing import Any


def failure_status(code: int, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    """A ``Status`` of ``Failure`` (*extra*: ``details`` …), as ``errors.StatusError`` sends."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    status.update(extra)
    return status


def too_large_rv_status(requested: int, current: int, **overrides: Any) -> dict[str, Any]:
    """``storage.NewTooLargeResourceVersionError`` as a 504 ``Status`` (*overrides* replace
    top-level fields: older servers' variants)."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"Timeout: Too large resource version: {requested}, current: {current}",
        "reason": "Timeout",
        "details": {
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
        "code": 504,
    }
    status.update(overrides)
    return status
