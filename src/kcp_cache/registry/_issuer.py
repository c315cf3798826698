"""Which cache issued a resourceVersion: a foreign one is 410 Gone, so the client relists.

With ``--resource-version-epoch`` on, every revision the store reports carries its
epoch (``kcp_cache.storage.EpochStorage``). A LIST or WATCH with a resourceVersion of
another epoch was issued by another cache; resuming from it here would silently skip or
repeat events, so it is answered 410 Gone — what client-go answers with a relist —
naming the issuing cache when the hierarchy knows it.
"""

from __future__ import annotations

from collections.abc import Callable

from kcp_cache.registry._errors import ApiError
from kcp_cache.storage import epoch_of

__all__ = ["RevisionIssuer"]


class RevisionIssuer:
    """Checks that a requested revision was issued by this store.

    *epoch* returns this store's epoch (0: epochs are off, nothing is checked);
    *cache_of_epoch* names the cache of another epoch, if known.
    """

    def __init__(
        self,
        epoch: Callable[[], int],
        cache_of_epoch: Callable[[int], str | None] = lambda _epoch: None,
    ) -> None:
        self.epoch = epoch
        self.cache_of_epoch = cache_of_epoch

    def check(self, revision: int) -> None:
        own = self.epoch()
        if not own or not revision:
            return
        other = epoch_of(revision)
        if other == own:
            return
        cache = self.cache_of_epoch(other) if other else None
        issuer = f'cache "{cache}"' if cache else f"another cache (store epoch {other})"
        raise ApiError.expired(
            f'resourceVersion "{revision}" was issued by {issuer}, not by this cache; '
            "list again to get one of this cache's"
        )
