"""The ``--audit-log-*`` flags, as one value both processes of the audit log share."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AuditOptions"]


@dataclass(frozen=True)
class AuditOptions:
    """The ``--audit-log-*`` flags."""

    path: str
    max_size_mib: int = 0
    max_backups: int = 0
    max_age_days: int = 0
    buffer_events: int = 10_000

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("the audit log needs a path (or - for standard output)")
        for name in ("max_size_mib", "max_backups", "max_age_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.buffer_events < 1:
            raise ValueError("the audit buffer must hold at least one event")

    def as_dict(self) -> dict[str, Any]:
        """The options as plain data (what the writer process is started with)."""
        return asdict(self)
