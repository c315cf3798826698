"""The printer columns of a CRD version: what a Table row shows (``kubectl get``).

A version's ``additionalPrinterColumns``, or kube's default (just the age) when it
declares none; the CRD resource itself has kube-apiserver's ``Created At`` column.
:class:`~kcp_cache.registry.ResourceInfo` parses them once per CRD version; Table
conversion, discovery and OpenAPI read them from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CRD_COLUMNS",
    "DEFAULT_COLUMNS",
    "PrinterColumn",
    "version_columns",
]


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (``type``: string/integer/number/boolean/date)."""

    name: str
    type: str
    json_path: str
    description: str = ""
    format: str = ""
    priority: int = 0

    @classmethod
    def from_crd(cls, column: Mapping[str, Any]) -> PrinterColumn:
        return cls(
            name=column["name"],
            type=column.get("type", "string"),
            json_path=column["jsonPath"],
            description=column.get("description", ""),
            format=column.get("format", ""),
            priority=int(column.get("priority", 0)),
        )


#: Kube's default columns for a CRD version that declares none: just the age.
DEFAULT_COLUMNS = (
    PrinterColumn(
        name="Age",
        type="date",
        json_path=".metadata.creationTimestamp",
        description=(
            "CreationTimestamp is a timestamp representing the server time when this object "
            "was created."
        ),
    ),
)


#: ``customresourcedefinitions``: kube's default table convertor prints this column as the
#: RFC 3339 timestamp itself, not as an age; a "string" cell does exactly that.
CRD_COLUMNS = (
    PrinterColumn(
        name="Created At",
        type="string",
        json_path=".metadata.creationTimestamp",
        description=DEFAULT_COLUMNS[0].description,
    ),
)


def version_columns(version: Mapping[str, Any]) -> tuple[PrinterColumn, ...]:
    """The columns of one entry of a CRD's ``spec.versions``."""
    declared = version.get("additionalPrinterColumns") or ()
    return tuple(PrinterColumn.from_crd(c) for c in declared) or DEFAULT_COLUMNS
