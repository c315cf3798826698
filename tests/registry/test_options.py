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
        (False, {"limit": "x"}, 400, 'strconv.ParseInt: parsing "x": invalid syntax'),
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


# Go's strconv, not Python's int(): kube's exact 400 for each value Python would accept.
@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        *(
            (
                "resourceVersion",
                value,
                f"invalid resource version: resourceVersion: Invalid value: {quoted}: "
                f"strconv.ParseUint: parsing {quoted}: {why}",
            )
            for value, quoted, why in [
                (" 5", '" 5"', "invalid syntax"),
                ("5 ", '"5 "', "invalid syntax"),
                ("1_0", '"1_0"', "invalid syntax"),
                ("\u0663", '"\u0663"', "invalid syntax"),  # ARABIC-INDIC DIGIT THREE
                ("+5", '"+5"', "invalid syntax"),  # ParseUint takes no sign
                ("-1", '"-1"', "invalid syntax"),
                ("0x10", '"0x10"', "invalid syntax"),
                ("18446744073709551616", '"18446744073709551616"', "value out of range"),
                ("9" * 5000, '"' + "9" * 5000 + '"', "value out of range"),
                ("5\n", '"5\\n"', "invalid syntax"),
            ]
        ),
        *(
            (param, value, f"strconv.ParseInt: parsing {quoted}: {why}")
            for param in ("limit", "timeoutSeconds")
            for value, quoted, why in [
                (" 5", '" 5"', "invalid syntax"),
                ("1_0", '"1_0"', "invalid syntax"),
                ("\u0663", '"\u0663"', "invalid syntax"),
                ("", '""', "invalid syntax"),
                ("1.5", '"1.5"', "invalid syntax"),
                ("9223372036854775808", '"9223372036854775808"', "value out of range"),
                ("\x01", '"\\x01"', "invalid syntax"),
            ]
        ),
    ],
)
def test_numbers_parse_as_go_parses_them(
    exports: ResourceInfo, param: str, value: str, message: str
) -> None:
    with pytest.raises(ApiError) as info:
        _opts(exports, param == "timeoutSeconds", **{param: value})
    assert (info.value.code, info.value.reason, info.value.message) == (400, "BadRequest", message)


def test_numbers_go_accepts(exports: ResourceInfo) -> None:
    assert _opts(exports, False, resourceVersion="18446744073709551615").revision == 2**64 - 1
    assert _opts(exports, False, resourceVersion="007").revision == 7
    assert _opts(exports, False, limit="+5").limit == 5  # ParseInt takes a sign
    assert _opts(exports, False, limit="-5").limit == 0  # negative: no limit, as in kube
    assert _opts(exports, True, timeoutSeconds="-1").timeout_seconds == -1
    assert _opts(exports, True).timeout_seconds is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("1", True),
        ("maybe", True),  # kube's query conversion: anything but 0/false is true
        ("", True),
        ("no", True),
        ("0", False),
        ("false", False),
        ("FALSE", False),
        ("False", False),
    ],
)
def test_booleans_decode_as_kube_decodes_them(
    exports: ResourceInfo, value: str, expected: bool
) -> None:
    assert _opts(exports, True, allowWatchBookmarks=value).allow_bookmarks is expected
    assert _opts(exports, False).allow_bookmarks is False
