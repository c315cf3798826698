"""``--parent-mode watch``: mirroring a parent through wildcard informers, as a region
below Go kcp's cache server would (beyond-kcp §3.1 scenario 12, second half). The parent
here is our server, which serves the same wildcard LIST and WATCH kcp's does."""

from __future__ import annotations

from pathlib import Path

from .helpers import apiexport, eventually, get, path, start_child, start_root, status_of

ROLES = ("rbac.authorization.k8s.io", "v1", "roles")


def test_a_region_mirrors_its_parent_through_watches(tmp_path: Path) -> None:
    root = start_root(tmp_path, "--home-shards", "amber")
    with root.client() as client:
        created = client.post(path(root, "amber", "w"), json=apiexport("x", team="a"))
        assert created.status_code == 201
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "reader", "namespace": "ns1"}, "rules": []}  # fmt: skip
        roles = root.resource_path("amber", "w", *ROLES[:2], "namespaces", "ns1", ROLES[2])
        assert client.post(roles, json=role).status_code == 201
        assert client.post(path(root, "amber", "w"), json=apiexport("doomed")).status_code == 201
    region = start_child(tmp_path, "eu-1", root, "--parent-mode", "watch")
    try:
        copy = eventually(
            lambda: (r := get(region, path(region, "amber", "w", "x"))).status_code == 200 and r,
            what="x at E",
        ).json()
        original = created.json()
        for field in ("uid", "creationTimestamp", "generation", "labels"):
            assert copy["metadata"].get(field) == original["metadata"].get(field), field
        assert copy["spec"] == original["spec"]
        assert copy["metadata"]["annotations"]["kcp.io/shard"] == "amber"
        roles_at_region = region.resource_path(
            "amber", "w", *ROLES[:2], "namespaces", "ns1", ROLES[2]
        )
        role_copy = get(region, f"{roles_at_region}/reader")
        assert role_copy.status_code == 200, role_copy.text
        # Live changes follow; a delete while the region is down is swept at its start.
        with root.client() as client:
            assert client.post(path(root, "amber", "w"), json=apiexport("late")).status_code == 201
        eventually(lambda: get(region, path(region, "amber", "w", "late")).status_code == 200,
                   what="late at E")  # fmt: skip
        region.stop()
        with root.client() as client:
            assert client.delete(path(root, "amber", "w", "doomed")).status_code == 200
        region.start()
        eventually(lambda: get(region, path(region, "amber", "w", "doomed")).status_code == 404,
                   what="doomed swept at E")  # fmt: skip
        assert get(region, path(region, "amber", "w", "x")).status_code == 200
        # Writes into the mirror are refused there too.
        with region.client() as client:
            refused = client.post(path(region, "amber", "w"), json=apiexport("no"))
        assert refused.status_code == 403
        assert get(region, "/services/cache/readyz/parent").status_code == 200
    finally:
        region.stop()
        root.stop()


def test_auto_mode_falls_back_to_watches_when_the_parent_has_no_feed(tmp_path: Path) -> None:
    """``--parent-mode auto`` (the default) asks the parent for its feed once: a parent
    that answers 404 (here ours with ``--serve-replication-feed false``, as kcp's Go
    cache server) is mirrored through watches; ours with the feed, through the feed."""
    root = start_root(tmp_path, "--home-shards", "amber", "--serve-replication-feed", "false")
    with root.client() as client:
        assert client.get("/services/cache/_replication/v1/feed").status_code == 404
        assert client.post(path(root, "amber", "a"), json=apiexport("x")).status_code == 201
    region = start_child(tmp_path, "eu-1", root)
    try:
        eventually(lambda: get(region, path(region, "amber", "a", "x")).status_code == 200,
                   what="x at E")  # fmt: skip
        eventually(lambda: status_of(region, "eu-1").get("upstream", {}).get("mode") == "watch",
                   what="E's upstream mode: watch")  # fmt: skip
        assert "does not serve the replication feed" in region.logs()
        with root.client() as client:
            assert client.delete(path(root, "amber", "a", "x")).status_code == 200
        eventually(lambda: get(region, path(region, "amber", "a", "x")).status_code == 404,
                   what="x gone at E")  # fmt: skip
    finally:
        region.stop()
        root.stop()
    # The same root with its feed: auto picks the feed.
    root.extra_args = tuple(
        a for a in root.extra_args if a not in ("--serve-replication-feed", "false")
    )
    root.start()
    region.start()
    try:
        eventually(lambda: status_of(region, "eu-1").get("upstream", {}).get("mode") == "feed",
                   what="E's upstream mode: feed")  # fmt: skip
    finally:
        region.stop()
        root.stop()
