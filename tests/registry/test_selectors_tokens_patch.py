"""Label/field selectors, continue tokens, JSON patch and merge patch."""

from __future__ import annotations

import pytest

from kcp_cache.registry import (
    ApiError,
    PatchError,
    SelectorError,
    apply_json_patch,
    apply_merge_patch,
    decode_continue,
    encode_continue,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "gold", "n": "5"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("missing notin (db)", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("app=web,tier=gold", True),
        ("app=web,tier=silver", False),
        ("n>4", True),
        ("n<5", False),
        ("example.com/team", False),
        ("  app = web , tier in ( gold ) ", True),
        ("app=", False),
    ],
)
def test_label_selector_semantics(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize(
    "selector",
    [
        "app in (",
        "=web",
        "app in web",
        "app notin",
        "a b",
        "app=web,",
        "!app=web",
        "n>x",
        "Bad Key",
        "app=a b",
    ],
)
def test_label_selector_errors(selector: str) -> None:
    with pytest.raises(SelectorError, match=r"unable to parse requirement|found"):
        parse_label_selector(selector)


def test_field_selectors() -> None:
    sel = parse_field_selector("metadata.name=a,metadata.namespace!=kube-system", namespaced=True)
    assert sel.matches("a", "default")
    assert not sel.matches("a", "kube-system")
    assert not sel.matches("b", "default")
    assert sel.exact("metadata.name") == "a"
    assert parse_field_selector("", namespaced=False).empty
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.x"):
        parse_field_selector("spec.x=1", namespaced=False)
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name", namespaced=False)


def test_continue_tokens_round_trip_and_reject_garbage() -> None:
    token = encode_continue(42, "opaque-engine-token")
    decoded = decode_continue(token)
    assert (decoded.revision, decoded.start, decoded.skip) == (42, "opaque-engine-token", 0)
    mid_first_page = decode_continue(encode_continue(7, None, 3))
    assert (mid_first_page.revision, mid_first_page.start, mid_first_page.skip) == (7, "", 3)
    for bad in ("!!!", "e30", encode_continue(0, "x"), "eyJ2IjoieCJ9", encode_continue(5, None)):
        with pytest.raises(ApiError) as info:
            decode_continue(bad)
        assert info.value.code == 400


def test_merge_patch() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert apply_merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, 2]}


def test_json_patch() -> None:
    doc = {"a": {"b": 1}, "l": [1, 2]}
    ops = [
        {"op": "add", "path": "/l/-", "value": 3},
        {"op": "add", "path": "/l/0", "value": 0},
        {"op": "replace", "path": "/a/b", "value": 5},
        {"op": "copy", "from": "/a", "path": "/c"},
        {"op": "move", "from": "/c/b", "path": "/d"},
        {"op": "remove", "path": "/l/1"},
        {"op": "test", "path": "/d", "value": 5},
        {"op": "add", "path": "/x~1y", "value": True},
    ]
    assert apply_json_patch(doc, ops) == {
        "a": {"b": 5},
        "l": [0, 2, 3],
        "c": {},
        "d": 5,
        "x/y": True,
    }
    assert doc == {"a": {"b": 1}, "l": [1, 2]}
    for bad in (
        [{"op": "test", "path": "/a/b", "value": 2}],
        [{"op": "remove", "path": "/nope"}],
        [{"op": "replace", "path": "/l/9", "value": 1}],
        [{"op": "bogus", "path": "/a"}],
        {"op": "add"},
    ):
        with pytest.raises(PatchError):
            apply_json_patch(doc, bad)
