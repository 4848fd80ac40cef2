"""Reconcile: rebuild the Redis budget counters and contact windows from the ledger of record.

Redis holds the live counters for speed; the ``budget_charges`` and ``decisions`` tables are
what they must add up to. After a Redis restart that lost its data the counters would start
from zero and allow a second month of spend — so the cron tick checks every minute whether
Redis still carries the mark of the last rebuild, and rebuilds when it does not. The CLI
(``flask --app wsgi reconcile-ledger``) runs it by hand.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from rq import get_current_job
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from decisioning.ledger import BudgetLedger
from decisioning.models import BudgetCharge, Decision
from infra.db import utcnow
from infra.job_runtime import job_sessionmaker
from offers.models import ContactPolicy

log = logging.getLogger("carepilot.ledger")
REBUILT_MARK = "cp:ledger:rebuilt_at"


def reconcile_ledger(factory: sessionmaker, redis_client: Any, now: datetime | None = None) -> dict[str, Any]:
    """Set every budget counter to the sum of its charges, re-add the contacts still inside
    their windows, and mark Redis as rebuilt. Returns what was rebuilt."""
    now = now or utcnow()
    with factory() as session:
        spent = {(code, period): amount for code, period, amount in session.execute(
            select(BudgetCharge.budget_code, BudgetCharge.period_key, func.sum(BudgetCharge.amount))
            .group_by(BudgetCharge.budget_code, BudgetCharge.period_key))}
        longest_days = session.scalar(select(func.max(ContactPolicy.window_days))
                                      .where(ContactPolicy.active.is_(True))) or 0
        contacts: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
        if longest_days:
            rows = session.execute(select(Decision.caller, Decision.request_id, Decision.subscriber_id,
                                          Decision.channel, Decision.created_at)
                                   .where(Decision.offer_code.is_not(None),
                                          Decision.created_at >= now - timedelta(days=longest_days))
                                   .execution_options(yield_per=10_000))
            for caller, request_id, subscriber_id, channel, created_at in rows:
                # the member is the reservation's request key, so a contact already there counts once
                contacts[(subscriber_id, channel)].append((f"{caller}|{request_id}",
                                                           int(created_at.timestamp() * 1000)))
    BudgetLedger(redis_client).rebuild(spent, contacts)
    redis_client.set(REBUILT_MARK, now.isoformat())
    summary = {"budgets": len(spent), "contact_windows": len(contacts),
               "spent": {f"{code}/{period}": str(amount) for (code, period), amount in spent.items()}}
    log.info("ledger rebuilt from the decisions table: %s", summary)
    return summary


def reconcile_ledger_job(force: bool = False) -> dict[str, Any]:
    """RQ entry point (cron tick, every minute): rebuild when Redis lost the rebuild mark (a
    restart without its data), or always with ``force``."""
    connection = get_current_job().connection
    if not force and connection.exists(REBUILT_MARK):
        return {"rebuilt": False}
    return {"rebuilt": True, **reconcile_ledger(job_sessionmaker(), connection)}
