"""Parse documents with the official ``kubernetes`` client's models, as its APIs do."""

from __future__ import annotations

from typing import Any

from kubernetes.client import ApiClient


def deserialize(data: Any, klass: str) -> Any:
    """``data`` as the model ``klass`` (raises ``ValueError`` on a missing required field)."""
    client = ApiClient()
    try:
        return client._ApiClient__deserialize(data, klass)  # type: ignore[attr-defined]
    finally:
        client.close()
