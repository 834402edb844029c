"""Texts every store writes the same way."""

from __future__ import annotations

#: Error recorded on a run whose worker stopped renewing its lease.
STALLED_ERROR = "job stalled - worker may have crashed (lease expired)"
#: Error that fails a task once it stalled more often than allowed.
STALLED_LIMIT_ERROR = "job stalled more than allowable limit"
