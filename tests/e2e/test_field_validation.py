"""``kubectl create --validate=…`` against the real binary: Strict, Warn, Ignore.

kubectl ≥ 1.27 leaves validation to the server when the OpenAPI v3 document lists the
``fieldValidation`` parameter (the server's does): ``--validate=strict`` (the default)
sends ``fieldValidation=Strict``, ``warn`` sends Warn, ``false`` Ignore.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kcp_cache.testing import CacheServer

from ._kubectl import Kubectl


@pytest.fixture
def kubectl(server: CacheServer, tmp_path: Path) -> Kubectl:
    return Kubectl(server, tmp_path)


def manifest(tmp_path: Path, name: str, **metadata: str) -> str:
    """An APIExport; by default with ``metadata.foo``, a field ObjectMeta does not have."""
    path = tmp_path / f"{name}.yaml"
    meta = {"name": name, **(metadata or {"foo": "bar"})}
    obj = {"apiVersion": "apis.kcp.io/v1alpha1", "kind": "APIExport", "metadata": meta}
    path.write_text(yaml.safe_dump(obj))
    return str(path)


def test_validate_strict_refuses_an_unknown_field(kubectl: Kubectl, tmp_path: Path) -> None:
    result = kubectl.run(
        "create", "--validate=strict", "-f", manifest(tmp_path, "strict"),
        cluster="validation", ok=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "metadata.foo"' in result.stderr
    missing = kubectl.run("get", "apiexports", "strict", cluster="validation", ok=False)
    assert "NotFound" in missing.stderr or "not found" in missing.stderr


def test_validate_warn_and_false(kubectl: Kubectl, tmp_path: Path) -> None:
    warned = kubectl.run(
        "create", "--validate=warn", "-f", manifest(tmp_path, "warned"),
        cluster="validation", ok=False,
    )  # fmt: skip
    assert warned.returncode == 0, warned.stderr
    assert 'Warning: unknown field "metadata.foo"' in warned.stderr
    ignored = kubectl.run(
        "create", "--validate=false", "-f", manifest(tmp_path, "ignored"),
        cluster="validation", ok=False,
    )  # fmt: skip
    assert ignored.returncode == 0, ignored.stderr
    assert "unknown field" not in ignored.stderr


def test_kubectl_asks_the_server_to_validate(kubectl: Kubectl, tmp_path: Path) -> None:
    _, requests = kubectl.trace(
        "create", "-f", manifest(tmp_path, "traced", generateName="t-"), cluster="validation"
    )
    (post,) = [r for r in requests if r.method == "POST"]
    assert "fieldValidation=Strict" in post.query
