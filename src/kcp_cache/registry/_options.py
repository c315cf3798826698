"""Request targets and list/watch options, parsed and validated like kube's ListOptions."""

from __future__ import annotations

from dataclasses import dataclass, field

from kcp_cache.meta import PARTIAL_API_VERSION
from kcp_cache.registry._admission import WriteAdmission
from kcp_cache.registry._catalog import ResourceInfo
from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._goparse import (
    GoNumberError,
    go_quote,
    parse_int64,
    parse_query_bool,
    parse_uint64,
)
from kcp_cache.registry._selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

__all__ = ["ListOptions", "Target", "check_resource_version"]

NOT_OLDER_THAN = "NotOlderThan"
EXACT = "Exact"


@dataclass(slots=True)  # not frozen: one is built per request, frozen init is slower
class Target:
    """Which resource a request addresses, and how its objects are to be served.

    ``shard``/``cluster`` may be ``"*"`` for list and watch. ``version`` is the served
    version of the URL (objects are relabelled to it). ``partial`` asks for
    ``PartialObjectMetadata`` renderings. ``admission`` (set by the server's
    authorizer) checks each write's object before it is stored.
    """

    info: ResourceInfo
    version: str
    shard: str
    cluster: str
    namespace: str | None = None
    identity: str | None = None
    partial: bool = False
    #: Checks the object of a write before it is stored (see :mod:`._admission`).
    admission: WriteAdmission | None = None

    @property
    def api_version(self) -> str:
        return PARTIAL_API_VERSION if self.partial else self.info.api_version(self.version)

    @property
    def list_kind(self) -> str:
        return "PartialObjectMetadataList" if self.partial else self.info.list_kind

    @property
    def kind(self) -> str:
        return "PartialObjectMetadata" if self.partial else self.info.kind


def _invalid_list_options(message: str) -> ApiError:
    return ApiError.invalid_options("ListOptions", message=message)


@dataclass(slots=True)
class ListOptions:
    """Query parameters of LIST, WATCH and DELETECOLLECTION."""

    label_selector: str = ""
    field_selector: str = ""
    resource_version: str = ""
    resource_version_match: str = ""
    limit: int = 0
    continue_token: str = ""
    allow_bookmarks: bool = False
    send_initial_events: bool | None = None
    #: ``timeoutSeconds``; ``None`` when absent (0 and negatives are kube's to interpret).
    timeout_seconds: int | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)
    fields: FieldSelector = field(default_factory=FieldSelector)

    @classmethod
    def from_query(cls, query: dict[str, str], info: ResourceInfo, *, watch: bool) -> ListOptions:
        """Parse and validate the query parameters kube accepts (400/422 as kube does).

        ``query`` holds the *first* value of each parameter, as kube's query decoding
        uses. Numbers follow Go's ``strconv`` (a malformed one is a 400 with Go's text),
        booleans kube's conversion (anything but ``0``/``false`` is true).
        """
        opts = cls(
            label_selector=query.get("labelSelector", ""),
            field_selector=query.get("fieldSelector", ""),
            resource_version=query.get("resourceVersion", ""),
            resource_version_match=query.get("resourceVersionMatch", ""),
            continue_token=query.get("continue", ""),
            allow_bookmarks=parse_query_bool(query.get("allowWatchBookmarks")),
        )
        if "sendInitialEvents" in query:
            opts.send_initial_events = parse_query_bool(query["sendInitialEvents"])
        try:
            if "timeoutSeconds" in query:
                opts.timeout_seconds = parse_int64(query["timeoutSeconds"])
            if "limit" in query:
                opts.limit = max(0, parse_int64(query["limit"]))
        except GoNumberError as exc:
            raise ApiError.bad_request(str(exc)) from None
        try:
            opts.labels = parse_label_selector(opts.label_selector)
            opts.fields = parse_field_selector(opts.field_selector, namespaced=info.namespaced)
        except SelectorError as exc:
            raise ApiError.bad_request(str(exc)) from None
        opts._validate(watch)
        return opts

    def _validate(self, watch: bool) -> None:
        """kube's ValidateListOptions / validateWatchOptions, same fields and wording."""
        rv, match = self.resource_version, self.resource_version_match
        check_resource_version(rv)
        errors: list[str] = []
        if watch:
            if self.send_initial_events is not None:
                if match != NOT_OLDER_THAN:
                    errors.append(
                        "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                        "resourceVersionMatch to NotOlderThan"
                    )
                if self.send_initial_events and not self.allow_bookmarks:
                    errors.append(
                        "allowWatchBookmarks: Forbidden: sendInitialEvents requires "
                        "allowWatchBookmarks=true"
                    )
            if match:
                if self.send_initial_events is None:
                    errors.append(
                        "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for "
                        "watch unless sendInitialEvents is provided"
                    )
                if match != NOT_OLDER_THAN:
                    errors.append(
                        f'resourceVersionMatch: Unsupported value: "{match}": supported values: '
                        '"NotOlderThan"'
                    )
        else:
            if match:
                if rv == "":
                    errors.append(
                        "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                        "unless resourceVersion is provided"
                    )
                if match not in (NOT_OLDER_THAN, EXACT):
                    errors.append(
                        f'resourceVersionMatch: Unsupported value: "{match}": supported values: '
                        '"Exact", "NotOlderThan", ""'
                    )
                if match == EXACT and rv == "0":
                    errors.append(
                        'resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is '
                        'forbidden for resourceVersion "0"'
                    )
            if self.send_initial_events is not None:
                errors.append(
                    "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"
                )
        if match and self.continue_token:
            errors.append(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when "
                "continue is provided"
            )
        if errors:
            joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
            raise _invalid_list_options(joined)
        if self.continue_token and rv not in ("", "0"):
            raise ApiError.bad_request(
                "specifying resource version is not allowed when using continue"
            )

    @property
    def revision(self) -> int:
        """The numeric resourceVersion (0 for "" and "0")."""
        rv = self.resource_version
        return int(rv) if rv not in ("", "0") else 0

    @property
    def filtered(self) -> bool:
        return not (self.labels.empty and self.fields.empty)


def check_resource_version(rv: str) -> int:
    """A ``resourceVersion`` query value as a revision (0 for ``""`` and ``"0"``).

    kube's ``APIObjectVersioner.ParseResourceVersion`` (Go's ``strconv.ParseUint``) and
    the 400 its list path answers, word for word.
    """
    if rv in ("", "0"):
        return 0
    try:
        return parse_uint64(rv)
    except GoNumberError as exc:
        raise ApiError.bad_request(
            f"invalid resource version: resourceVersion: Invalid value: {go_quote(rv)}: {exc}"
        ) from None
