"""The official ``kubernetes`` Python client's discovery against our documents (via the stub)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, dynamic

from ._crds import ALL
from ._stub import RunningStub, StubServer


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[StubServer, str]]:
    app = StubServer(ALL)
    with RunningStub(app) as running:
        yield app, running.url


@pytest.fixture
def api(stub: tuple[StubServer, str]) -> Iterator[client.ApiClient]:
    config = client.Configuration()
    config.host = f"{stub[1]}/services/cache/shards/amber/clusters/acme"
    with client.ApiClient(config) as api_client:
        yield api_client


def test_generated_discovery_apis(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().minor == "37"
    groups = client.ApisApi(api).get_api_versions().groups
    kcp = next(g for g in groups if g.name == "apis.kcp.io")
    assert kcp.preferred_version.version == "v1alpha2"
    resources = client.ApiextensionsV1Api(api).get_api_resources().resources
    assert [r.name for r in resources] == ["customresourcedefinitions"]
    assert client.CoreApi(api).get_api_versions().versions == []


def test_dynamic_client_resolves_preferred_and_explicit_versions(
    api: client.ApiClient, stub: tuple[StubServer, str], tmp_path: Path
) -> None:
    dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    preferred = dyn.resources.get(api_version="apis.kcp.io/v1alpha2", kind="APIExport")
    assert (preferred.name, preferred.namespaced, preferred.preferred) == (
        "apiexports",
        False,
        True,
    )
    older = dyn.resources.get(api_version="apis.kcp.io/v1alpha1", kind="APIExport")
    assert older.preferred is False
    roles = dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="Role")
    assert roles.namespaced is True
    created = preferred.create(
        body={"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIExport",
              "metadata": {"name": "from-python"}},
    )  # fmt: skip
    assert created.metadata.annotations["kcp.io/cluster"] == "acme"
    names = [item.metadata.name for item in preferred.get().items]
    assert "from-python" in names
