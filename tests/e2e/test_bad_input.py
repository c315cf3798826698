"""Black-box: every bad input to the real binary gets kube's 4xx Status, loses nothing.

One server per storage engine (SQLite, then etcd) serves the whole table. Each row sends
one bad request and asserts the exact code, reason and message kube answers with (from
``k8s.io/apiserver``/``apimachinery``: Go's ``strconv`` texts, ``field.Error`` wording);
then the stored object is byte-for-byte what it was, the collection holds nothing else,
and the server still serves. The server's log must not show a single traceback.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from kcp_cache.registry import MAX_NESTING
from kcp_cache.testing import CacheServer, start_cache_server

CLUSTER = "/services/cache/shards/amber/clusters/acme"
EXPORTS = f"{CLUSTER}/apis/apis.kcp.io/v1alpha1/apiexports"
KEEP = f"{EXPORTS}/keep"
ROLES = f"{CLUSTER}/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles"
TYPE = '"apiVersion":"apis.kcp.io/v1alpha1","kind":"APIExport"'

JSON = {"content-type": "application/json"}
YAML = {"content-type": "application/yaml"}
MERGE = {"content-type": "application/merge-patch+json"}
JSON_PATCH = {"content-type": "application/json-patch+json"}

#: Tails of kube's validation texts, spelled once.
KEY_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def nested(levels: int) -> str:
    """A JSON value of ``levels`` nested objects."""
    return '{"a":' * levels + "1" + "}" * levels


def export(name: str, extra: str = "") -> bytes:
    return ("{" + TYPE + ',"metadata":{"name":"' + name + '"}' + extra + "}").encode()


def yaml_export(name: str, spec: bytes) -> bytes:
    head = f"apiVersion: apis.kcp.io/v1alpha1\nkind: APIExport\nmetadata: {{name: {name}}}\n"
    return head.encode() + b"spec: " + spec


def token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def rv_message(value: str, why: str = "invalid syntax") -> str:
    quoted = json.dumps(value, ensure_ascii=False)
    return (
        f"invalid resource version: resourceVersion: Invalid value: {quoted}: "
        f"strconv.ParseUint: parsing {quoted}: {why}"
    )


def parse_int(value: str, why: str = "invalid syntax") -> str:
    return f"strconv.ParseInt: parsing {json.dumps(value, ensure_ascii=False)}: {why}"


BAD_START = (
    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
)
DEPTH = f"exceeded max depth of {MAX_NESTING} nested objects and arrays"

# (id, method, path, request kwargs, code, reason, message — exact, or "…" + a fragment)
Row = tuple[str, str, str, dict[str, Any], int, str, str]
ROWS: list[Row] = [
    # -- resourceVersion: Go's ParseUint, not Python's int() -----------------------------
    *(
        (f"rv {v!r}", "GET", EXPORTS, {"params": {"resourceVersion": v}}, 400, "BadRequest", m)
        for v, m in [
            (" 5", rv_message(" 5")),
            ("1_0", rv_message("1_0")),
            ("\u0663", rv_message("\u0663")),
            ("+5", rv_message("+5")),
            ("-1", rv_message("-1")),
            ("99999999999999999999", rv_message("99999999999999999999", "value out of range")),
        ]
    ),
    (
        "rv on get",
        "GET",
        KEEP,
        {"params": {"resourceVersion": "x"}},
        400,
        "BadRequest",
        rv_message("x"),
    ),
    (
        "rv on watch",
        "GET",
        EXPORTS,
        {"params": {"watch": "1", "resourceVersion": "1_0"}},
        400,
        "BadRequest",
        rv_message("1_0"),
    ),
    # -- limit / timeoutSeconds / gracePeriodSeconds: Go's ParseInt ------------------------
    (
        "limit space",
        "GET",
        EXPORTS,
        {"params": {"limit": " 5"}},
        400,
        "BadRequest",
        parse_int(" 5"),
    ),
    (
        "limit underscore",
        "GET",
        EXPORTS,
        {"params": {"limit": "1_0"}},
        400,
        "BadRequest",
        parse_int("1_0"),
    ),
    (
        "limit huge",
        "GET",
        EXPORTS,
        {"params": {"limit": "9" * 30}},
        400,
        "BadRequest",
        parse_int("9" * 30, "value out of range"),
    ),
    (
        "timeoutSeconds on list",
        "GET",
        EXPORTS,
        {"params": {"timeoutSeconds": "soon"}},
        400,
        "BadRequest",
        parse_int("soon"),
    ),
    (
        "timeoutSeconds huge",
        "GET",
        EXPORTS,
        {"params": {"watch": "1", "timeoutSeconds": "9" * 20}},
        400,
        "BadRequest",
        parse_int("9" * 20, "value out of range"),
    ),
    (
        "gracePeriodSeconds",
        "DELETE",
        KEEP,
        {"params": {"gracePeriodSeconds": "soon"}},
        400,
        "BadRequest",
        parse_int("soon"),
    ),
    (
        "gracePeriodSeconds on collection",
        "DELETE",
        EXPORTS,
        {"params": {"gracePeriodSeconds": "1.5"}},
        400,
        "BadRequest",
        parse_int("1.5"),
    ),
    # -- option values kube validates (422 Invalid on the options kind) --------------------
    (
        "propagationPolicy",
        "DELETE",
        KEEP,
        {"params": {"propagationPolicy": "Eventually"}},
        422,
        "Invalid",
        (
            'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
            'value: "Eventually": supported values: "Foreground", "Background", "Orphan", '
            '"nil"'
        ),
    ),
    (
        "propagationPolicy in body",
        "DELETE",
        EXPORTS,
        {"content": b'{"propagationPolicy":"Later"}', "headers": JSON},
        422,
        "Invalid",
        (
            'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
            'value: "Later": supported values: "Foreground", "Background", "Orphan", '
            '"nil"'
        ),
    ),
    (
        "fieldValidation",
        "POST",
        EXPORTS,
        {"content": export("fv"), "headers": JSON, "params": {"fieldValidation": "Loose"}},
        422,
        "Invalid",
        (
            'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported '
            'value: "Loose": supported values: "", "Ignore", "Strict", "Warn"'
        ),
    ),
    (
        "fieldManager too long",
        "PUT",
        KEEP,
        {"content": export("keep"), "headers": JSON, "params": {"fieldManager": "m" * 129}},
        422,
        "Invalid",
        (
            'UpdateOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may '
            "not be more than 128 bytes"
        ),
    ),
    (
        "fieldManager control character",
        "PATCH",
        KEEP,
        {"content": b"{}", "headers": MERGE, "params": {"fieldManager": "a\x01"}},
        422,
        "Invalid",
        (
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Invalid value: '
            '"a\\x01": invalid character U+0001 (at position 1)'
        ),
    ),
    (
        "resourceVersionMatch",
        "GET",
        EXPORTS,
        {"params": {"resourceVersion": "1", "resourceVersionMatch": "Newest"}},
        422,
        "Invalid",
        (
            'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Unsupported '
            'value: "Newest": supported values: "Exact", "NotOlderThan", ""'
        ),
    ),
    (
        "dryRun",
        "DELETE",
        KEEP,
        {"params": {"dryRun": "Bogus"}},
        422,
        "Invalid",
        'DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: "Bogus": '
        'supported values: "All"',
    ),
    # -- selectors --------------------------------------------------------------------------
    (
        "labelSelector",
        "GET",
        EXPORTS,
        {"params": {"labelSelector": "a in"}},
        400,
        "BadRequest",
        "unable to parse requirement: found '', expected: '('",
    ),
    (
        "fieldSelector",
        "GET",
        EXPORTS,
        {"params": {"fieldSelector": "spec.x=1"}},
        400,
        "BadRequest",
        "field label not supported: spec.x",
    ),
    # -- continue tokens: malformed and forged ---------------------------------------------
    (
        "continue not base64",
        "GET",
        EXPORTS,
        {"params": {"continue": "!!!"}},
        400,
        "BadRequest",
        "continue key is not valid: illegal base64 data or JSON payload",
    ),
    (
        "continue other encoding",
        "GET",
        EXPORTS,
        {"params": {"continue": token({"v": "x/v9", "rv": 1})}},
        400,
        "BadRequest",
        "continue key is not valid: server does not recognize this encoding",
    ),
    (
        "continue forged start",
        "GET",
        EXPORTS,
        {"params": {"continue": token({"v": "meta.k8s.io/v1", "rv": 1, "start": "zzz"})}},
        400,
        "BadRequest",
        BAD_START,
    ),
    (
        "continue forged non-ascii start",
        "GET",
        EXPORTS,
        {"params": {"continue": token({"v": "meta.k8s.io/v1", "rv": 1, "start": "\u0000\uffff"})}},
        400,
        "BadRequest",
        BAD_START,
    ),
    (
        "continue start of another range",
        "GET",
        EXPORTS,
        {
            "params": {
                "continue": token(
                    {
                        "v": "meta.k8s.io/v1",
                        "rv": 1,
                        "start": base64.urlsafe_b64encode(
                            b'{"rev":1,"start":"/elsewhere/x"}'
                        ).decode(),
                    }
                )
            }
        },
        400,
        "BadRequest",
        BAD_START,
    ),
    (
        "continue future revision",
        "GET",
        EXPORTS,
        {
            "params": {
                "continue": token(
                    {
                        "v": "meta.k8s.io/v1",
                        "rv": 10**15,
                        "start": base64.urlsafe_b64encode(
                            b'{"rev":1000000000000000,"start":"x"}'
                        ).decode(),
                    }
                )
            }
        },
        400,
        "BadRequest",
        BAD_START,
    ),
    (
        "continue boolean revision",
        "GET",
        EXPORTS,
        {"params": {"continue": token({"v": "meta.k8s.io/v1", "rv": True, "start": "x"})}},
        400,
        "BadRequest",
        BAD_START,
    ),
    # -- bodies: nesting, numbers, encodings ----------------------------------------------
    (
        "create nested too deep",
        "POST",
        EXPORTS,
        {"content": export("deep", ',"spec":' + nested(MAX_NESTING)), "headers": JSON},
        400,
        "BadRequest",
        f"couldn't get version/kind; json parse error: {DEPTH}",
    ),
    (
        "create nested 300 arrays",
        "POST",
        EXPORTS,
        {"content": export("deep", ',"spec":' + "[" * 300 + "]" * 300), "headers": JSON},
        400,
        "BadRequest",
        f"couldn't get version/kind; json parse error: {DEPTH}",
    ),
    (
        "update nested too deep",
        "PUT",
        KEEP,
        {"content": export("keep", ',"spec":' + nested(300)), "headers": JSON},
        400,
        "BadRequest",
        f"couldn't get version/kind; json parse error: {DEPTH}",
    ),
    (
        "merge patch nested too deep",
        "PATCH",
        KEEP,
        {"content": ('{"spec":' + nested(300) + "}").encode(), "headers": MERGE},
        400,
        "BadRequest",
        f"error decoding patch: {DEPTH}",
    ),
    (
        "json patch value too deep",
        "PATCH",
        KEEP,
        {
            "content": ('[{"op":"add","path":"/spec","value":' + nested(300) + "}]").encode(),
            "headers": JSON_PATCH,
        },
        400,
        "BadRequest",
        f"error decoding patch: {DEPTH}",
    ),
    (
        "json patch result too deep",
        "PATCH",
        KEEP,
        {
            "content": (
                '[{"op":"add","path":"/spec","value":'
                + nested(200)
                + '},{"op":"add","path":"/spec'
                + "/a" * 100
                + '/x","value":'
                + nested(200)
                + "}]"
            ).encode(),
            "headers": JSON_PATCH,
        },
        400,
        "BadRequest",
        f"the patched object: {DEPTH}",
    ),
    (
        "json patch result just too deep",
        "PATCH",
        KEEP,
        {
            "content": (
                '[{"op":"add","path":"/spec","value":'
                + nested(200)
                + '},{"op":"add","path":"/spec'
                + "/a" * 100
                + '/x","value":'
                + nested(139)
                + "}]"
            ).encode(),
            "headers": JSON_PATCH,
        },
        400,
        "BadRequest",
        f"the patched object: {DEPTH}",
    ),
    (
        "json too deep for the parser",
        "POST",
        EXPORTS,
        {"content": export("deep", ',"spec":' + nested(5000)), "headers": JSON},
        400,
        "BadRequest",
        "…depth limit exceeded",
    ),
    (
        "json NaN",
        "POST",
        EXPORTS,
        {"content": export("nan", ',"spec":NaN'), "headers": JSON},
        400,
        "BadRequest",
        "…couldn't get version/kind; json parse error: unexpected character",
    ),
    (
        "json number overflows",
        "POST",
        EXPORTS,
        {"content": export("big", ',"spec":1e400'), "headers": JSON},
        400,
        "BadRequest",
        "…number is infinity",
    ),
    (
        "json invalid utf-8",
        "POST",
        EXPORTS,
        {"content": export("u", ',"spec":"\xff"').replace(b"\xc3\xbf", b"\xff"), "headers": JSON},
        400,
        "BadRequest",
        "…not valid UTF-8",
    ),
    (
        "json lone surrogate escape",
        "POST",
        EXPORTS,
        {"content": export("s", ',"spec":"\\ud800"'), "headers": JSON},
        400,
        "BadRequest",
        "…no low surrogate in string",
    ),
    (
        "json trailing garbage",
        "POST",
        EXPORTS,
        {"content": export("t") + b" x", "headers": JSON},
        400,
        "BadRequest",
        "…unexpected content after document",
    ),
    (
        "json array body",
        "POST",
        EXPORTS,
        {"content": b"[1]", "headers": JSON},
        400,
        "BadRequest",
        "…unknown format",
    ),
    (
        "yaml integer of 5000 digits",
        "POST",
        EXPORTS,
        {
            "content": yaml_export("big", b"9" * 5000),
            "headers": YAML,
        },
        400,
        "BadRequest",
        "error converting YAML to JSON: the integer on line 4 does not fit in 64 bits",
    ),
    (
        "yaml integer past 64 bits",
        "POST",
        EXPORTS,
        {
            "content": yaml_export("big", b"18446744073709551616"),
            "headers": YAML,
        },
        400,
        "BadRequest",
        "error converting YAML to JSON: the integer on line 4 does not fit in 64 bits",
    ),
    (
        "yaml binary",
        "POST",
        EXPORTS,
        {
            "content": yaml_export("bin", b"!!binary aGVsbG8="),
            "headers": YAML,
        },
        400,
        "BadRequest",
        "error converting YAML to JSON: !!binary data (line 4) has no JSON form",
    ),
    (
        "yaml set",
        "POST",
        EXPORTS,
        {
            "content": yaml_export("set", b"!!set {a, b}"),
            "headers": YAML,
        },
        400,
        "BadRequest",
        "error converting YAML to JSON: a !!set (line 4) has no JSON form",
    ),
    (
        "yaml NaN",
        "POST",
        EXPORTS,
        {
            "content": yaml_export("nan", b".nan"),
            "headers": YAML,
        },
        400,
        "BadRequest",
        "error converting YAML to JSON: json: unsupported value: .nan",
    ),
    (
        "yaml null key",
        "POST",
        EXPORTS,
        {
            "content": yaml_export("k", b"{~: a}"),
            "headers": YAML,
        },
        400,
        "BadRequest",
        "error converting YAML to JSON: unsupported map key of type NoneType: None",
    ),
    (
        "yaml nested too deep",
        "POST",
        EXPORTS,
        {
            "content": yaml_export("deep", b"[" * 300 + b"]" * 300),
            "headers": YAML,
        },
        400,
        "BadRequest",
        f"error converting YAML to JSON: {DEPTH}",
    ),
    (
        "yaml alias",
        "POST",
        EXPORTS,
        {"content": b"a: &a [x]\nb: *a\n", "headers": YAML},
        400,
        "BadRequest",
        "error converting YAML to JSON: YAML aliases are not supported",
    ),
    (
        "yaml two documents",
        "POST",
        EXPORTS,
        {"content": b"a: 1\n---\nb: 2\n", "headers": YAML},
        400,
        "BadRequest",
        "…expected a single document",
    ),
    (
        "body over 3 MiB",
        "PUT",
        KEEP,
        {"content": b'{"pad":"' + b"x" * (3 * 1024 * 1024) + b'"}', "headers": JSON},
        413,
        "RequestEntityTooLarge",
        "Request entity too large: limit is 3145728",
    ),
    (
        "patch over 3 MiB",
        "PATCH",
        KEEP,
        {"content": b'{"pad":"' + b"x" * (3 * 1024 * 1024) + b'"}', "headers": MERGE},
        413,
        "RequestEntityTooLarge",
        "Request entity too large: limit is 3145728",
    ),
    # -- content types ---------------------------------------------------------------------
    (
        "write as text/plain",
        "POST",
        EXPORTS,
        {"content": export("txt"), "headers": {"content-type": "text/plain"}},
        415,
        "UnsupportedMediaType",
        "…unknown format",
    ),
    (
        "content type without a type",
        "POST",
        EXPORTS,
        {"content": export("semi"), "headers": {"content-type": ";;;"}},
        415,
        "UnsupportedMediaType",
        "…unknown format",
    ),
    (
        "patch as application/json",
        "PATCH",
        KEEP,
        {"content": b"{}", "headers": JSON},
        415,
        "UnsupportedMediaType",
        "…unknown format",
    ),
    (
        "strategic merge patch",
        "PATCH",
        KEEP,
        {"content": b"{}", "headers": {"content-type": "application/strategic-merge-patch+json"}},
        415,
        "UnsupportedMediaType",
        "…strategic merge patch is not supported",
    ),
    (
        "apply patch without a field manager",
        "PATCH",
        KEEP,
        {"content": b"{}", "headers": {"content-type": "application/apply-patch+yaml"}},
        422,
        "Invalid",
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
        "for apply patch",
    ),
    (
        "delete options as text/plain",
        "DELETE",
        KEEP,
        {"content": b"{}", "headers": {"content-type": "text/plain"}},
        415,
        "UnsupportedMediaType",
        "…unknown format",
    ),
    # -- patch bodies of each type ---------------------------------------------------------
    (
        "json patch object",
        "PATCH",
        KEEP,
        {"content": b'{"op":"add","path":"/x","value":1}', "headers": JSON_PATCH},
        400,
        "BadRequest",
        "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
    ),
    (
        "json patch string",
        "PATCH",
        KEEP,
        {"content": b'"x"', "headers": JSON_PATCH},
        400,
        "BadRequest",
        "json: cannot unmarshal string into Go value of type jsonpatch.Patch",
    ),
    (
        "json patch number",
        "PATCH",
        KEEP,
        {"content": b"5", "headers": JSON_PATCH},
        400,
        "BadRequest",
        "json: cannot unmarshal number into Go value of type jsonpatch.Patch",
    ),
    (
        "json patch malformed",
        "PATCH",
        KEEP,
        {"content": b"[{", "headers": JSON_PATCH},
        400,
        "BadRequest",
        "…error decoding patch:",
    ),
    (
        "json patch unknown op",
        "PATCH",
        KEEP,
        {"content": b'[{"op":"frob","path":"/x"}]', "headers": JSON_PATCH},
        422,
        "Invalid",
        "unknown JSON patch operation 'frob'",
    ),
    (
        "json patch failed test",
        "PATCH",
        KEEP,
        {"content": b'[{"op":"test","path":"/kind","value":"Other"}]', "headers": JSON_PATCH},
        422,
        "Invalid",
        "testing value /kind failed",
    ),
    (
        "json patch index of 5000 digits",
        "PATCH",
        KEEP,
        {
            "content": b'[{"op":"add","path":"/spec","value":[1]},'
            b'{"op":"add","path":"/spec/' + b"9" * 5000 + b'","value":1}]',
            "headers": JSON_PATCH,
        },
        422,
        "Invalid",
        "…out of bounds",
    ),
    (
        "json patch index in non-ascii digits",
        "PATCH",
        KEEP,
        {
            "content": '[{"op":"add","path":"/spec","value":[1,2,3,4]},'
            '{"op":"remove","path":"/spec/\u0663"}]'.encode(),
            "headers": JSON_PATCH,
        },
        422,
        "Invalid",
        "invalid array index '\u0663'",
    ),
    (
        "merge patch array",
        "PATCH",
        KEEP,
        {"content": b"[1]", "headers": MERGE},
        400,
        "BadRequest",
        "the patched object is not a JSON object",
    ),
    (
        "merge patch empty",
        "PATCH",
        KEEP,
        {"content": b"", "headers": MERGE},
        400,
        "BadRequest",
        "…error decoding patch: Input is a zero-length",
    ),
    (
        "merge patch bad label",
        "PATCH",
        KEEP,
        {"content": b'{"metadata":{"labels":{"bad key":"v"}}}', "headers": MERGE},
        422,
        "Invalid",
        (
            'APIExport.apis.kcp.io "keep" is invalid: metadata.labels: Invalid value: '
            f'"bad key": name part {KEY_RULE}'
        ),
    ),
    # -- DeleteOptions bodies --------------------------------------------------------------
    (
        "delete body malformed",
        "DELETE",
        KEEP,
        {"content": b"{{", "headers": JSON},
        400,
        "BadRequest",
        "…couldn't get version/kind; json parse error",
    ),
    (
        "deletecollection body malformed",
        "DELETE",
        EXPORTS,
        {"content": b"{{", "headers": JSON},
        400,
        "BadRequest",
        "…couldn't get version/kind; json parse error",
    ),
    (
        "deletecollection body array",
        "DELETE",
        EXPORTS,
        {"content": b"[]", "headers": JSON},
        400,
        "BadRequest",
        "the body of a DELETE must be a DeleteOptions object",
    ),
    (
        "delete precondition uid number",
        "DELETE",
        KEEP,
        {"content": b'{"preconditions":{"uid":5}}', "headers": JSON},
        400,
        "BadRequest",
        (
            "json: cannot unmarshal number into Go struct field Preconditions.preconditions.uid "
            "of type types.UID"
        ),
    ),
    (
        "delete gracePeriodSeconds string",
        "DELETE",
        KEEP,
        {"content": b'{"gracePeriodSeconds":"5"}', "headers": JSON},
        400,
        "BadRequest",
        (
            "json: cannot unmarshal string into Go struct field DeleteOptions.gracePeriodSeconds "
            "of type int64"
        ),
    ),
    # -- metadata kube validates -----------------------------------------------------------
    (
        "label key",
        "POST",
        EXPORTS,
        {
            "content": export("l1", "").replace(b'"l1"}', b'"l1","labels":{"a b":"v"}}'),
            "headers": JSON,
        },
        422,
        "Invalid",
        (
            'APIExport.apis.kcp.io "l1" is invalid: metadata.labels: Invalid value: '
            f'"a b": name part {KEY_RULE}'
        ),
    ),
    (
        "label value",
        "POST",
        EXPORTS,
        {"content": export("l2").replace(b'"l2"}', b'"l2","labels":{"k":"v!"}}'), "headers": JSON},
        422,
        "Invalid",
        (
            'APIExport.apis.kcp.io "l2" is invalid: metadata.labels: Invalid value: '
            f'"v!": {VALUE_RULE}'
        ),
    ),
    (
        "label value too long",
        "POST",
        EXPORTS,
        {
            "content": export("l3").replace(b'"l3"}', b'"l3","labels":{"k":"' + b"v" * 64 + b'"}}'),
            "headers": JSON,
        },
        422,
        "Invalid",
        (
            'APIExport.apis.kcp.io "l3" is invalid: metadata.labels: Invalid value: '
            f'"{"v" * 64}": must be no more than 63 bytes'
        ),
    ),
    (
        "label key prefix",
        "POST",
        EXPORTS,
        {
            "content": export("l4").replace(b'"l4"}', b'"l4","labels":{"Ex.com/k":"v"}}'),
            "headers": JSON,
        },
        422,
        "Invalid",
        '…metadata.labels: Invalid value: "Ex.com/k": prefix part a lowercase RFC 1123 subdomain',
    ),
    (
        "annotation key",
        "POST",
        EXPORTS,
        {
            "content": export("a1").replace(b'"a1"}', b'"a1","annotations":{"a/b/c":"v"}}'),
            "headers": JSON,
        },
        422,
        "Invalid",
        '…metadata.annotations: Invalid value: "a/b/c": a valid label key must consist',
    ),
    (
        "annotations over 256 KiB",
        "POST",
        EXPORTS,
        {
            "content": export("a2").replace(
                b'"a2"}', b'"a2","annotations":{"k":"' + b"v" * (256 * 1024) + b'"}}'
            ),
            "headers": JSON,
        },
        422,
        "Invalid",
        (
            'APIExport.apis.kcp.io "a2" is invalid: metadata.annotations: Too long: '
            "may not be more than 262144 bytes"
        ),
    ),
    (
        "replica with a time Go cannot parse",
        "POST",
        EXPORTS,
        {
            "content": export("r1").replace(
                b'"r1"}',
                b'"r1","uid":"u1","creationTimestamp":"yesterday",'
                b'"annotations":{"kcp.io/shard":"amber"}}',
            ),
            "headers": JSON,
        },
        400,
        "BadRequest",
        'metadata.creationTimestamp: "yesterday" is not an RFC 3339 time '
        "(cannot decode into ObjectMeta)",
    ),
    (
        "finalizer that is not a string",
        "POST",
        EXPORTS,
        {"content": export("f1").replace(b'"f1"}', b'"f1","finalizers":[1]}'), "headers": JSON},
        400,
        "BadRequest",
        "metadata.finalizers: must be of type []string (cannot decode into ObjectMeta)",
    ),
    (
        "name",
        "POST",
        EXPORTS,
        {"content": export("Bad_Name"), "headers": JSON},
        422,
        "Invalid",
        '…metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain',
    ),
    (
        "namespace",
        "GET",
        f"{CLUSTER}/apis/rbac.authorization.k8s.io/v1/namespaces/Bad_NS/roles",
        {},
        422,
        "Invalid",
        '…metadata.namespace: Invalid value: "Bad_NS"',
    ),
    (
        "update resourceVersion with a space",
        "PUT",
        KEEP,
        {
            "content": export("keep").replace(b'"keep"}', b'"keep","resourceVersion":" 1"}'),
            "headers": JSON,
        },
        422,
        "Invalid",
        (
            'APIExport.apis.kcp.io "keep" is invalid: metadata.resourceVersion: Invalid '
            'value: " 1": must be a positive integer'
        ),
    ),
    (
        "update resourceVersion a number",
        "PUT",
        KEEP,
        {
            "content": export("keep").replace(b'"keep"}', b'"keep","resourceVersion":1}'),
            "headers": JSON,
        },
        400,
        "BadRequest",
        "metadata.resourceVersion: must be of type string (cannot decode into ObjectMeta)",
    ),
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_storage_flags: tuple[str, ...]
) -> Iterator[CacheServer]:
    with start_cache_server(tmp_path_factory.mktemp("bad-input"), *module_storage_flags) as s:
        yield s
        assert "Traceback" not in s.logs()


@pytest.fixture(scope="module")
def client(server: CacheServer) -> Iterator[httpx2.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def kept(client: httpx2.Client) -> bytes:
    """The one object of the collection, as GET serves it before any bad request."""
    body = export("keep").replace(b'"keep"}', b'"keep","labels":{"app":"kept"}}')
    assert client.post(EXPORTS, content=body, headers=JSON).status_code == 201
    return client.get(KEEP).content


def assert_status(r: httpx2.Response, code: int, reason: str, message: str) -> None:
    assert r.status_code == code, r.text
    status = r.json()
    assert (status["kind"], status["apiVersion"], status["status"]) == ("Status", "v1", "Failure")
    assert (status["code"], status["reason"]) == (code, reason)
    if message.startswith("…"):
        assert message[1:] in status["message"]
    else:
        assert status["message"] == message


def assert_intact(client: httpx2.Client, kept: bytes) -> None:
    assert client.get(KEEP).content == kept
    listed = client.get(EXPORTS).json()["items"]
    assert [item["metadata"]["name"] for item in listed] == ["keep"]
    assert client.get("/readyz").text == "ok"


@pytest.mark.parametrize(
    ("method", "path", "request_args", "code", "reason", "message"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_bad_input_gets_kubes_status(
    client: httpx2.Client,
    kept: bytes,
    method: str,
    path: str,
    request_args: dict[str, Any],
    code: int,
    reason: str,
    message: str,
) -> None:
    assert_status(client.request(method, path, **request_args), code, reason, message)
    assert_intact(client, kept)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/livez"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_health_endpoints_answer_get_and_head_only(
    client: httpx2.Client, kept: bytes, path: str, method: str
) -> None:
    r = client.request(method, path, content=b"x")
    assert_status(
        r,
        405,
        "MethodNotAllowed",
        f"{method} is not allowed on {path}: health endpoints answer GET and HEAD only",
    )
    assert r.headers["allow"] == "GET, HEAD"
    assert (client.get(path).status_code, client.head(path).status_code) == (200, 200)
    assert_intact(client, kept)


def test_query_values_kube_accepts_mean_what_they_mean_to_kube(
    client: httpx2.Client, kept: bytes
) -> None:
    # The first of repeated parameters counts (kube's query decoding): a limit of 1.
    r = client.get(f"{EXPORTS}?limit=1&limit=x")
    assert r.status_code == 200
    assert len(r.json()["items"]) == 1
    # Any boolean but 0/false is true to kube: watch=maybe is a watch (ended by its
    # timeout), not a LIST; watch=false is a LIST.
    r = client.get(EXPORTS, params={"watch": "maybe", "timeoutSeconds": "1"})
    assert r.status_code == 200
    assert [json.loads(line)["type"] for line in r.text.splitlines()] == ["ADDED"]
    assert client.get(EXPORTS, params={"watch": "false"}).json()["kind"] == "APIExportList"
    # A negative timeoutSeconds is a deadline already passed: the watch ends at once.
    r = client.get(EXPORTS, params={"watch": "1", "timeoutSeconds": "-1"}, timeout=10)
    assert r.status_code == 200
    # JSON patch "null" decodes to no operations: a no-op, as in kube.
    r = client.patch(KEEP, content=b"null", headers=JSON_PATCH)
    assert r.status_code == 200
    assert_intact(client, kept)


def test_deepest_accepted_object_is_served_by_every_read_path(client: httpx2.Client) -> None:
    """An object at the nesting limit is stored and served as a GET, in a LIST, in a
    watch event and as a Table row carrying the object: the limit leaves the envelopes
    room (orjson encodes at most 254 levels)."""
    deep = f"{CLUSTER.replace('acme', 'deep')}/apis/apis.kcp.io/v1alpha1/apiexports"
    body = export("deepest", ',"spec":' + nested(MAX_NESTING - 1))
    created = client.post(deep, content=body, headers=JSON)
    assert created.status_code == 201, created.text
    spec = json.loads(body)["spec"]
    assert client.get(f"{deep}/deepest").json()["spec"] == spec
    assert client.get(deep).json()["items"][0]["spec"] == spec
    watched = client.get(deep, params={"watch": "1", "timeoutSeconds": "1"})
    assert json.loads(watched.text.splitlines()[0])["object"]["spec"] == spec
    table = client.get(
        deep,
        params={"includeObject": "Object"},
        headers={"accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    assert table.status_code == 200, table.text
    assert table.json()["rows"][0]["object"]["spec"] == spec
    merged = client.patch(
        f"{deep}/deepest", content=b'{"metadata":{"labels":{"a":"b"}}}', headers=MERGE
    )
    assert merged.status_code == 200, merged.text
    assert client.delete(f"{deep}/deepest").status_code == 200
