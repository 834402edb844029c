"""Monthly spending caps per organization (USD, calendar month in UTC).

A task of an organization that has spent its cap fails at once with
"budget exceeded", before any model request; it is not retried. Spend is the sum
of the organization's runs' ``cost_usd`` this month (runs of unknown price count 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from config.errors import AgentQueueError, ConfigError
from taskstore import Task, TaskStore, normalize_id


class BudgetExceeded(AgentQueueError):
    """The task's organization has spent its monthly cap. Not retryable."""

    retryable = False

    def __init__(self, organization_id: str, spent: Decimal, cap: Decimal) -> None:
        super().__init__(
            f"budget exceeded: organization {organization_id} spent ${spent:.2f}"
            f" of its ${cap:.2f} monthly cap"
        )
        self.organization_id = organization_id
        self.spent = spent
        self.cap = cap


def month_start(moment: datetime) -> datetime:
    """Midnight UTC on the first day of ``moment``'s month."""
    utc = moment.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class BudgetPolicy:
    """The monthly cap of each organization: its own, else the default; None means no cap."""

    default: Decimal | None = None
    per_organization: Mapping[str, Decimal] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, default: Decimal | None, per_organization: Mapping[str, Any]) -> BudgetPolicy:
        """Validate ``AGENTQ_ORG_BUDGETS_JSON`` entries (organization uuid → non-negative USD)."""
        caps: dict[str, Decimal] = {}
        for organization_id, value in per_organization.items():
            try:
                key = normalize_id(organization_id, "organization id")
                cap = Decimal(str(value))
            except (AgentQueueError, InvalidOperation) as exc:
                raise ConfigError(
                    f"AGENTQ_ORG_BUDGETS_JSON entry {organization_id!r}: {value!r} is invalid"
                ) from exc
            if isinstance(value, bool) or not cap.is_finite() or cap < 0:
                raise ConfigError(
                    f"AGENTQ_ORG_BUDGETS_JSON entry {organization_id!r}: {value!r} is not a USD amount"
                )
            caps[key] = cap
        return cls(default, caps)

    def cap_for(self, organization_id: str) -> Decimal | None:
        return self.per_organization.get(organization_id, self.default)

    def check(self, store: TaskStore, task: Task, now: datetime) -> None:
        """Raise :class:`BudgetExceeded` if ``task``'s organization has spent its cap this month."""
        cap = self.cap_for(task.organization_id)
        if cap is None:
            return
        spent = store.organization_spend(task.organization_id, since=month_start(now))
        if spent >= cap:
            raise BudgetExceeded(task.organization_id, spent, cap)
