"""List/watch option validation with kube's codes and wording."""

from __future__ import annotations

import pytest

from kcp_cache.registry import ApiError, ListOptions, ResourceInfo


def _opts(info: ResourceInfo, watch: bool = False, **query: str) -> ListOptions:
    return ListOptions.from_query(query, info, watch=watch)


@pytest.mark.parametrize(
    ("watch", "query", "code", "fragment"),
    [
        (
            False,
            {"resourceVersionMatch": "Exact"},
            422,
            "forbidden unless resourceVersion is provided",
        ),
        (
            False,
            {"resourceVersion": "0", "resourceVersionMatch": "Exact"},
            422,
            '"exact" is forbidden',
        ),
        (
            False,
            {"resourceVersion": "5", "resourceVersionMatch": "Newest"},
            422,
            "Unsupported value",
        ),
        (False, {"sendInitialEvents": "true"}, 422, "sendInitialEvents is forbidden for list"),
        (False, {"continue": "x", "resourceVersion": "5"}, 400, "not allowed when using continue"),
        (False, {"resourceVersion": "-1"}, 400, "invalid resource version"),
        (False, {"limit": "x"}, 400, "invalid limit"),
        (False, {"labelSelector": "a in (b"}, 400, "unable to parse requirement"),
        (
            True,
            {"resourceVersionMatch": "NotOlderThan"},
            422,
            "unless sendInitialEvents is provided",
        ),
        (
            True,
            {"sendInitialEvents": "true", "allowWatchBookmarks": "true"},
            422,
            "requires setting",
        ),
        (
            True,
            {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"},
            422,
            "allowWatchBookmarks",
        ),
    ],
)
def test_invalid_options(
    exports: ResourceInfo, watch: bool, query: dict[str, str], code: int, fragment: str
) -> None:
    with pytest.raises(ApiError) as info:
        _opts(exports, watch, **query)
    assert info.value.code == code
    assert fragment in info.value.message


def test_valid_options(exports: ResourceInfo) -> None:
    opts = _opts(exports, False, resourceVersion="7", resourceVersionMatch="Exact", limit="5")
    assert (opts.revision, opts.limit) == (7, 5)
    watch = _opts(
        exports,
        True,
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="1",
    )
    assert watch.send_initial_events is True
    assert watch.allow_bookmarks is True
    assert _opts(exports, True, resourceVersion="0").revision == 0
