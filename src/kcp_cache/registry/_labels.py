"""``metadata.labels`` and ``metadata.annotations`` validation, as kube's ObjectMeta
validation does it (``ValidateLabels``, ``ValidateAnnotations``), word for word.

The cache server validates no schema, but these two maps are ObjectMeta: label selectors,
kubectl and every controller assume kube's rules hold for them, and a label stored here
that kube would refuse breaks the replication of that object into a real kcp shard.
"""

from __future__ import annotations

import re
from typing import Any, Final

from kcp_cache.registry._goparse import go_quote

__all__ = ["validate_labels_and_annotations"]

#: kube's ``TotalAnnotationSizeLimitB``: keys and values together.
ANNOTATIONS_MAX_BYTES: Final = 256 * 1024
_NAME_MAX: Final = 63
_PREFIX_MAX: Final = 253

_KEY_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_KEY: Final = re.compile(_KEY_FMT, re.ASCII)
_SUBDOMAIN_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_SUBDOMAIN: Final = re.compile(_SUBDOMAIN_FMT, re.ASCII)
_KEY_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    f"for validation is '{_KEY_FMT}')"
)
_SUBDOMAIN_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    f"regex used for validation is '{_SUBDOMAIN_FMT}')"
)
_VALUE_MSG: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '({_KEY_FMT})?')"
)

Cause = tuple[str, str, str]

# Fast paths: one regex decides that a key or value is valid (nearly all are); only a
# rejected one goes through the rule-by-rule checks that word kube's messages. Matches
# are ASCII, so their length in characters is their length in bytes.
_NAME_PART: Final = "[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_VALID_KEY: Final = re.compile(f"(?:({_SUBDOMAIN_FMT})/)?{_NAME_PART}", re.ASCII)
#: Annotation keys: the same rule after lower-casing, i.e. a prefix of any case.
_VALID_ANNOTATION_KEY: Final = re.compile(
    f"(?:({_SUBDOMAIN_FMT})/)?{_NAME_PART}", re.ASCII | re.IGNORECASE
)
_VALID_VALUE: Final = re.compile(f"(?:{_NAME_PART})?", re.ASCII)


#: Strings already found valid, per pattern. Objects repeat the same few label keys,
#: annotation keys and label values, and a set lookup costs a tenth of a regex match.
_SEEN_VALID: Final[dict[re.Pattern[str], set[str]]] = {
    _VALID_KEY: set(),
    _VALID_ANNOTATION_KEY: set(),
    _VALID_VALUE: set(),
}
_SEEN_MAX: Final = 4096


def _fast_valid(pattern: re.Pattern[str], text: str) -> bool:
    seen = _SEEN_VALID[pattern]
    if text in seen:
        return True
    match = pattern.fullmatch(text)
    if match is None or (match.lastindex and len(match.group(1) or "") > _PREFIX_MAX):
        return False
    if len(seen) >= _SEEN_MAX:
        seen.clear()
    seen.add(text)
    return True


def _key_errors(key: str) -> list[str]:
    """``content.IsLabelKey``: an optional DNS-subdomain prefix, then a 63-byte name."""
    parts = key.split("/")
    if len(parts) > 2:
        return [
            f"a valid label key {_KEY_MSG} with an optional DNS subdomain prefix and '/' "
            "(e.g. 'example.com/MyName')"
        ]
    errors: list[str] = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix.encode()) > _PREFIX_MAX:
                errors.append(f"prefix part must be no more than {_PREFIX_MAX} bytes")
            if _SUBDOMAIN.fullmatch(prefix) is None:
                errors.append(f"prefix part {_SUBDOMAIN_MSG}")
    if not name:
        errors.append("name part must be non-empty")
    elif len(name.encode()) > _NAME_MAX:
        errors.append(f"name part must be no more than {_NAME_MAX} bytes")
    if _KEY.fullmatch(name) is None:
        errors.append(f"name part {_KEY_MSG}")
    return errors


def _value_errors(value: str) -> list[str]:
    errors: list[str] = []
    if len(value.encode()) > _NAME_MAX:
        errors.append(f"must be no more than {_NAME_MAX} bytes")
    if value and _KEY.fullmatch(value) is None:
        errors.append(_VALUE_MSG)
    return errors


def _bytes(annotations: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def validate_labels_and_annotations(meta: dict[str, Any]) -> list[Cause]:
    """Field errors (``(reason, field, message)``) of the two maps; empty when valid.

    The maps are already known to be ``map[string]string`` (ObjectMeta coercion).
    """
    causes: list[Cause] = []
    for key, value in (meta.get("labels") or {}).items():
        if not _fast_valid(_VALID_KEY, key):
            for text in _key_errors(key):
                causes.append(
                    (
                        "FieldValueInvalid",
                        "metadata.labels",
                        f"Invalid value: {go_quote(key)}: {text}",
                    )
                )
        if not _fast_valid(_VALID_VALUE, value):
            for text in _value_errors(value):
                causes.append(
                    (
                        "FieldValueInvalid",
                        "metadata.labels",
                        f"Invalid value: {go_quote(value)}: {text}",
                    )
                )
    annotations = meta.get("annotations") or {}
    chars = 0
    for key, value in annotations.items():
        # kube: a qualified name, except that case does not matter.
        if not _fast_valid(_VALID_ANNOTATION_KEY, key):
            for text in _key_errors(key.lower()):
                causes.append(
                    (
                        "FieldValueInvalid",
                        "metadata.annotations",
                        f"Invalid value: {go_quote(key)}: {text}",
                    )
                )
        chars += len(key) + len(value)
    # A character is at most 4 bytes: count bytes only when characters cannot decide.
    if chars * 4 > ANNOTATIONS_MAX_BYTES and _bytes(annotations) > ANNOTATIONS_MAX_BYTES:
        causes.append(
            (
                "FieldValueTooLong",
                "metadata.annotations",
                f"Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes",
            )
        )
    return causes
