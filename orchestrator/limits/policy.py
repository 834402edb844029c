"""Which buckets a model call counts in: its model's, and its organization's quota.

A model bucket is one per ``provider:model`` actually called. Its limits come from the most specific
``AGENTQ_PROVIDER_LIMITS_JSON`` entry: the exact ``provider:model``, else the longest matching prefix
pattern (``openai:gpt-4o*``), else ``provider:*``. A wildcard entry gives each model it matches its own
bucket with those limits. A model no entry matches still has a bucket, without limits of its own: the
provider's headers (a 429's Retry-After, ``x-ratelimit-remaining-*``) pause or shrink it for every worker.

An organization's bucket (``org:<id>``) counts every call of the organization's tasks, whatever the
model: its ``AGENTQ_ORG_LIMITS_JSON`` entry, with ``AGENTQ_ORG_TPM`` as the token quota when the entry
sets none; organizations without an entry get ``AGENTQ_ORG_TPM`` alone (0: no organization quota).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from config.rate_limits import RateLimit

__all__ = ["MODEL_CACHE_SIZE", "Bucket", "LimitPolicy", "margin_ms"]

#: Most resolved ``provider:model`` buckets remembered (agents name few models; this bounds a typo storm).
MODEL_CACHE_SIZE = 4096
#: Longest time a request may take to leave after its slot begins and still be counted exactly.
MAX_SEND_MARGIN_MS = 2000


def margin_ms(window_ms: int) -> int:
    """How long after its slot begins a request may leave: 2 s, at most a fifth of the window.

    A request is counted from its slot until one window after the earlier of its answer and this
    margin: the provider received it by then, so no window as the provider sees it holds more than
    the limit. A slot held for a postponed task lapses when the task returns later than this.
    """
    return min(MAX_SEND_MARGIN_MS, window_ms // 5)


@dataclass(frozen=True)
class Bucket:
    """One shared bucket.

    Attributes:
        name: ``provider:model`` or ``org:<organization id>``; also its Redis key's middle part.
        limit: Its limits, or None for a bucket only the provider's headers shape.
        kind: ``model`` or ``org``.
    """

    name: str
    limit: RateLimit | None
    kind: Literal["model", "org"] = "model"

    @property
    def window_ms(self) -> int:
        """The bucket's window (a minute without limits of its own)."""
        return self.limit.window_ms if self.limit is not None else 60_000


class LimitPolicy:
    """Resolves the buckets of a call from the configured limits.

    Args:
        models: ``AGENTQ_PROVIDER_LIMITS_JSON``, already validated (``config.rate_limits``).
        org_tpm: ``AGENTQ_ORG_TPM``; 0 for no default organization quota.
        orgs: ``AGENTQ_ORG_LIMITS_JSON``, keyed by normalised organization id.
    """

    def __init__(
        self,
        models: Mapping[str, RateLimit] | None = None,
        *,
        org_tpm: int = 0,
        orgs: Mapping[str, RateLimit] | None = None,
    ) -> None:
        """Build the policy; see the class docstring."""
        self.models = dict(models or {})
        self.org_tpm = org_tpm
        self.orgs = {key: limit.with_default_tpm(org_tpm) for key, limit in (orgs or {}).items()}
        self._exact = {key: limit for key, limit in self.models.items() if not key.endswith("*")}
        #: Prefix patterns, longest first: the first that matches is the most specific.
        self._prefixes = sorted(
            ((key[:-1], limit) for key, limit in self.models.items() if key.endswith("*")),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._cache: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether any limit is configured."""
        return bool(self.models or self.org_tpm or self.orgs)

    def model_limit(self, name: str) -> RateLimit | None:
        """The limits of the ``provider:model`` bucket ``name``: its most specific entry, or None."""
        exact = self._exact.get(name)
        if exact is not None:
            return exact
        return next((limit for prefix, limit in self._prefixes if name.startswith(prefix)), None)

    def model_bucket(self, provider: str, model: str) -> Bucket:
        """The bucket of ``model`` at ``provider``."""
        key = (provider, model)
        bucket = self._cache.get(key)
        if bucket is None:
            name = f"{provider}:{model}"
            bucket = Bucket(name, self.model_limit(name), "model")
            with self._lock:
                if len(self._cache) >= MODEL_CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = bucket
        return bucket

    def org_limit(self, organization_id: str) -> RateLimit | None:
        """The quota of an organization: its entry, else ``AGENTQ_ORG_TPM``, else None."""
        limit = self.orgs.get(organization_id)
        if limit is not None:
            return limit
        return RateLimit(tpm=self.org_tpm) if self.org_tpm else None

    def org_bucket(self, organization_id: str | None) -> Bucket | None:
        """The organization's quota bucket, or None when it has no quota (or the task no organization)."""
        if not organization_id:
            return None
        limit = self.org_limit(organization_id)
        return None if limit is None else Bucket(f"org:{organization_id}", limit, "org")

    def buckets(self, provider: str, model: str, organization_id: str | None) -> tuple[Bucket, ...]:
        """Every bucket a call of ``model`` for ``organization_id`` counts in: the model's first."""
        model_bucket = self.model_bucket(provider, model)
        org = self.org_bucket(organization_id)
        return (model_bucket,) if org is None else (model_bucket, org)

    def bucket_named(self, name: str) -> Bucket:
        """The bucket called ``name`` (``org:<id>`` or ``provider:model``), for reports."""
        if name.startswith("org:"):
            limit = self.org_limit(name[4:])
            return Bucket(name, limit, "org")
        return Bucket(name, self.model_limit(name), "model")
