"""``Cache.spec.export`` / ``spec.import`` (beyond-kcp §3.1), real processes.

The flags write their defaults into the cache's own ``Cache`` object at start-up; an
admin's update of the object changes what flows at run time, without a restart; a spec
the replication could not read is refused with 422.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .helpers import (
    SCHEMAS,
    apiexport,
    cache_url,
    eventually,
    get,
    merge_patch,
    names,
    path,
    schema,
    start_child,
    start_root,
)

PUBLIC = {"cache.kcp.io/public": "true"}


def _never(check: Any, seconds: float = 1.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not check()
        time.sleep(0.1)


def test_flags_are_written_into_the_cache_object_and_bad_specs_are_refused(
    tmp_path: Path,
) -> None:
    root = start_root(tmp_path)
    region = start_child(
        tmp_path, "eu-1", root,
        "--export-resources", "apis.kcp.io/apiexports",
        "--export-label-selector", "cache.kcp.io/public=true",
        "--import-resources", "apis.kcp.io/apiexports,core/secrets",
    )  # fmt: skip
    try:
        spec = get(region, cache_url(region, "eu-1")).json()["spec"]
        assert spec["export"] == [
            {"group": "apis.kcp.io", "resource": "apiexports",
             "labelSelector": {"matchLabels": PUBLIC}}
        ]  # fmt: skip
        assert spec["import"] == [
            {"group": "apis.kcp.io", "resource": "apiexports"},
            {"group": "", "resource": "secrets"},
        ]
        bad = [
            ({"export": "everything"}, "spec.export"),
            ({"export": [{"group": "apis.kcp.io"}]}, "spec.export[0].resource"),
            ({"import": [{"group": "*", "resource": "*", "labelSelector": {"matchExpressions": [
                {"key": "tier", "operator": "Maybe"}]}}]},
             "spec.import[0].labelSelector.matchExpressions[0].operator"),
            ({"import": [{"group": "*", "resource": "*", "labelSelector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": []}]}}]},
             "spec.import[0].labelSelector.matchExpressions[0].values"),
            ({"export": [{"group": "Bad Group", "resource": "x", "colour": "red"}]},
             "spec.export[0].colour"),
        ]  # fmt: skip
        for change, field in bad:
            refused = merge_patch(region, cache_url(region, "eu-1"), {"spec": change})
            assert refused.status_code == 422, (change, refused.text)
            status = refused.json()
            assert status["reason"] == "Invalid"
            assert field in {c["field"] for c in status["details"]["causes"]}, status
        good = {
            "export": [
                {
                    "group": "*",
                    "resource": "*",
                    "labelSelector": {
                        "matchExpressions": [
                            {"key": "tier", "operator": "NotIn", "values": ["secret"]}
                        ]
                    },
                }
            ]
        }
        accepted = merge_patch(region, cache_url(region, "eu-1"), {"spec": good})
        assert accepted.status_code == 200, accepted.text
        # A restart without export flags keeps the admin's spec.
        region.stop()
        flags = region.extra_args
        cut = flags.index("--export-resources")
        region.extra_args = flags[:cut] + flags[cut + 4 :]
        region.start()
        assert get(region, cache_url(region, "eu-1")).json()["spec"]["export"] == good["export"]
    finally:
        region.stop()
        root.stop()


def test_an_admin_changes_the_export_policy_at_run_time(tmp_path: Path) -> None:
    """Per-type selectors; an object that stops being exported is deleted at R (within
    the delete guard: 1 of 5); one that starts being exported goes up."""
    root = start_root(tmp_path)
    region = start_child(tmp_path, "eu-1", root, "--home-shards", "sapphire")
    try:
        with region.client() as client:
            for name in ("p1", "p2", "p3", "p4"):
                assert client.post(path(region, "sapphire", "c"),
                                   json=apiexport(name, **PUBLIC)).status_code == 201  # fmt: skip
            assert client.post(path(region, "sapphire", "c"),
                               json=apiexport("private")).status_code == 201  # fmt: skip
            assert client.post(path(region, "sapphire", "c", resource=SCHEMAS),
                               json=schema("s1")).status_code == 201  # fmt: skip
        at_root = path(root, "sapphire", "c")
        eventually(lambda: len(names(root, at_root)) == 5, what="five APIExports at R")
        eventually(lambda: names(root, path(root, "sapphire", "c", resource=SCHEMAS)) == {"s1"},
                   what="the schema at R")  # fmt: skip
        policy = [
            {"group": "apis.kcp.io", "resource": "apiexports",
             "labelSelector": {"matchLabels": PUBLIC}},
            {"group": "apis.kcp.io", "resource": "apiresourceschemas",
             "labelSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}},
        ]  # fmt: skip
        patched = merge_patch(region, cache_url(region, "eu-1"), {"spec": {"export": policy}})
        assert patched.status_code == 200, patched.text
        eventually(lambda: names(root, at_root) == {"p1", "p2", "p3", "p4"},
                   what="the unlabelled APIExport deleted at R")  # fmt: skip
        with region.client() as client:
            assert client.post(path(region, "sapphire", "c"),
                               json=apiexport("private2")).status_code == 201  # fmt: skip
            assert client.post(path(region, "sapphire", "c"),
                               json=apiexport("p5", **PUBLIC)).status_code == 201  # fmt: skip
            assert client.post(path(region, "sapphire", "c", resource=SCHEMAS),
                               json=schema("s2")).status_code == 201  # fmt: skip
            assert client.post(path(region, "sapphire", "c", resource=SCHEMAS),
                               json=schema("s3", tier="hidden")).status_code == 201  # fmt: skip
        eventually(lambda: "p5" in names(root, at_root), what="p5 at R")
        eventually(lambda: names(root, path(root, "sapphire", "c", resource=SCHEMAS))
                   == {"s1", "s2"}, what="s2 at R")  # fmt: skip
        _never(lambda: "private2" in names(root, at_root))
        assert "s3" not in names(root, path(root, "sapphire", "c", resource=SCHEMAS))
        # Back to everything (the field removed): private and private2 go up again.
        patched = merge_patch(region, cache_url(region, "eu-1"), {"spec": {"export": None}})
        assert patched.status_code == 200, patched.text
        eventually(lambda: {"private", "private2"} <= names(root, at_root),
                   what="the unlabelled APIExports back at R")  # fmt: skip
    finally:
        region.stop()
        root.stop()


def test_an_admin_changes_the_import_policy_at_run_time(tmp_path: Path) -> None:
    root = start_root(tmp_path, "--home-shards", "amber")
    region = start_child(tmp_path, "eu-1", root)
    try:
        with root.client() as client:
            assert client.post(path(root, "amber", "c"),
                               json=apiexport("x", **PUBLIC)).status_code == 201  # fmt: skip
            assert client.post(path(root, "amber", "c"), json=apiexport("y")).status_code == 201
            assert client.post(path(root, "amber", "c", resource=SCHEMAS),
                               json=schema("z")).status_code == 201  # fmt: skip
        at_region = path(region, "amber", "c")
        schemas_at_region = path(region, "amber", "c", resource=SCHEMAS)
        eventually(lambda: names(region, at_region) == {"x", "y"}, what="x and y at E")
        eventually(lambda: names(region, schemas_at_region) == {"z"}, what="z at E")
        policy = [{"group": "apis.kcp.io", "resource": "apiexports",
                   "labelSelector": {"matchLabels": PUBLIC}}]  # fmt: skip
        patched = merge_patch(region, cache_url(region, "eu-1"), {"spec": {"import": policy}})
        assert patched.status_code == 200, patched.text
        eventually(lambda: names(region, at_region) == {"x"}, what="y swept from E")
        eventually(lambda: names(region, schemas_at_region) == set(), what="z swept from E")
        # Live: an object that loses its label upstream goes; unlabelled ones never come.
        with root.client() as client:
            assert client.post(path(root, "amber", "c"),
                               json=apiexport("w", **PUBLIC)).status_code == 201  # fmt: skip
            assert client.post(path(root, "amber", "c"), json=apiexport("v")).status_code == 201
            obj = client.get(path(root, "amber", "c", "x")).json()
            obj["metadata"]["labels"] = {}
            assert client.put(path(root, "amber", "c", "x"), json=obj).status_code == 200
        eventually(lambda: names(region, at_region) == {"w"}, what="x gone, w at E")
        _never(lambda: "v" in names(region, at_region), 0.5)
        # Widened again: the parent's objects come back without a restart.
        patched = merge_patch(region, cache_url(region, "eu-1"), {"spec": {"import": None}})
        assert patched.status_code == 200, patched.text
        eventually(lambda: names(region, at_region) == {"x", "y", "v", "w"},
                   what="everything at E again")  # fmt: skip
        eventually(lambda: names(region, schemas_at_region) == {"z"}, what="z back at E")
        assert get(region, "/services/cache/readyz/parent").status_code == 200
    finally:
        region.stop()
        root.stop()
