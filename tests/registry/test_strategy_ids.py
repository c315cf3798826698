"""The uid and creationTimestamp a create assigns: same form as uuid4 / metav1.Time."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from kcp_cache.registry import new_uid, now_timestamp


def test_new_uid_is_a_canonical_version_4_uuid() -> None:
    seen = set()
    for _ in range(2000):
        text = new_uid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lower-case hex, 8-4-4-4-12
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 2000


def test_now_is_the_current_utc_second_in_rfc3339() -> None:
    before = int(time.time())
    text = now_timestamp()
    after = int(time.time())
    parsed = int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
    assert before <= parsed <= after
    assert text == datetime.fromtimestamp(parsed, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert now_timestamp() >= text  # the cache never goes back in time
