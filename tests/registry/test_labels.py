"""Label and annotation validation: kube's rules and texts, and fast paths that agree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kcp_cache.registry import (
    _VALID_ANNOTATION_KEY,
    _VALID_KEY,
    _VALID_VALUE,
    _fast_valid,
    _key_errors,
    _value_errors,
    validate_labels_and_annotations,
)


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        ("app", []),
        ("app.kubernetes.io/name", []),
        ("a" * 63, []),
        ("a" * 253 + "/n", []),
        ("a" * 64, ["name part must be no more than 63 bytes"]),
        ("a" * 254 + "/n", ["prefix part must be no more than 253 bytes"]),
        ("/n", ["prefix part must be non-empty"]),
        ("p/", ["name part must be non-empty", "name part must consist"]),
        ("Ex.com/n", ["prefix part a lowercase RFC 1123 subdomain"]),
        ("a/b/c", ["a valid label key must consist"]),
        ("-a", ["name part must consist"]),
        ("é", ["name part must consist"]),
    ],
)
def test_key_rules(key: str, errors: list[str]) -> None:
    found = _key_errors(key)
    assert len(found) == len(errors)
    for text, start in zip(found, errors, strict=True):
        assert text.startswith(start)


def test_messages_and_causes() -> None:
    causes = validate_labels_and_annotations(
        {"labels": {"ok": "fine", "k": "v" * 64}, "annotations": {"Example.COM/Key": "x"}}
    )
    assert causes == [
        (
            "FieldValueInvalid",
            "metadata.labels",
            f'Invalid value: "{"v" * 64}": must be no more than 63 bytes',
        )
    ]  # an annotation key's case does not matter, as in kube
    too_big = {"annotations": {"k": "€" * 90_000}}  # 270,000 bytes, 90,000 characters
    assert validate_labels_and_annotations(too_big) == [
        (
            "FieldValueTooLong",
            "metadata.annotations",
            "Too long: may not be more than 262144 bytes",
        )
    ]
    assert validate_labels_and_annotations({"annotations": {"k": "v" * 262_143}}) == []


label_text = st.text(alphabet="aZ09-_./é ", max_size=70) | st.text(max_size=20)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=label_text)
def test_fast_paths_accept_only_what_the_rules_accept(text: str) -> None:
    """The regex fast paths may only accept what the rule-by-rule checks accept, and must
    accept all of it (ASCII texts; other texts fall to the rules anyway)."""
    assert _fast_valid(_VALID_KEY, text) == (not _key_errors(text))
    assert _fast_valid(_VALID_VALUE, text) == (not _value_errors(text))
    if _fast_valid(_VALID_ANNOTATION_KEY, text):
        assert not _key_errors(text.lower())
