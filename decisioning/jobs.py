"""Reconcile: rebuild the Redis budget counters and contact windows from the ledger of record.

Redis holds the live counters for speed; the ``budget_charges`` and ``decisions`` tables are
what they must add up to. After a Redis restart that lost its data the counters would start
from zero and allow a second month of spend. They cannot: the ready mark went with the data,
and without it the reservation script refuses every paid reservation (the decision service
answers ``degraded``, paid actions held back). The cron tick checks every minute whether
Redis still carries the mark, and rebuilds when it does not. The CLI
(``flask --app wsgi reconcile-ledger``) rebuilds by hand.

A rebuild, in order:

1. takes the ready mark away and a lease (``BudgetLedger.begin_rebuild``): from here no paid
   reservation succeeds, so nothing is charged that the sums could miss;
2. waits ``grace_s`` (default ``REBUILD_GRACE_S``) for the decision rows of reservations made
   before that moment to be written — a sum read before a row commits would drop its charge;
3. forgets every request marker (a reservation whose request stored no row holds a charge the
   rebuilt counters will not: its retry reserves again; a request with a row replays the row),
   then sums the charges and collects the contacts still inside their windows;
4. sets the counters and the ready mark together, if its lease was not taken by another
   rebuild meanwhile (then that one finishes the job).

Paid actions are held back from step 1 to step 4. ``grace_s=0`` is for a Redis nobody
decides against yet (``make run``'s embedded server before the web starts, tests).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from decisioning.ledger import LEDGER_READY_KEY, RESERVATION_TO_ROW_S, BudgetLedger
from decisioning.models import Decision
from infra.db import utcnow
from infra.job_runtime import current_job_connection, job_sessionmaker
from offers.models import BudgetCharge, ContactPolicy

log = logging.getLogger("carepilot.ledger")
REBUILT_MARK = LEDGER_READY_KEY
REBUILD_GRACE_S = RESERVATION_TO_ROW_S
_LEASE_MARGIN_S = 600.0  # the job's timeout: a rebuild that dies gives the lease back by then


class RebuildSuperseded(Exception):
    """Another rebuild took the lease while this one was summing: it sets the counters."""


def reconcile_ledger(
    factory: sessionmaker[Session], redis_client: Any, now: datetime | None = None, *, grace_s: float = REBUILD_GRACE_S
) -> dict[str, Any]:
    """Set every budget counter to the sum of its charges, re-add the contacts still inside
    their windows, and mark Redis as rebuilt (module docstring: paid actions are held back
    meanwhile). Returns what was rebuilt; raises RebuildSuperseded when another rebuild took
    over."""
    ledger = BudgetLedger(redis_client)
    token = ledger.begin_rebuild(lease_s=grace_s + _LEASE_MARGIN_S)
    if grace_s > 0:
        time.sleep(grace_s)
    forgotten = ledger.forget_requests()
    now = now or utcnow()
    with factory() as session:
        spent = {
            (code, period): amount
            for code, period, amount in session.execute(
                select(BudgetCharge.budget_code, BudgetCharge.period_key, func.sum(BudgetCharge.amount)).group_by(
                    BudgetCharge.budget_code, BudgetCharge.period_key
                )
            )
        }
        longest_days = (
            session.scalar(select(func.max(ContactPolicy.window_days)).where(ContactPolicy.active.is_(True))) or 0
        )
        contacts: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
        if longest_days:
            rows = session.execute(
                select(
                    Decision.caller, Decision.request_id, Decision.subscriber_id, Decision.channel, Decision.created_at
                )
                .where(Decision.offer_code.is_not(None), Decision.created_at >= now - timedelta(days=longest_days))
                .execution_options(yield_per=10_000)
            )
            for caller, request_id, subscriber_id, channel, created_at in rows:
                # the member is the reservation's request key, so a contact already there counts once
                contacts[(subscriber_id, channel)].append(
                    (f"{caller}|{request_id}", int(created_at.timestamp() * 1000))
                )
    if not ledger.rebuild(spent, contacts, token=token, mark=now.isoformat()):
        raise RebuildSuperseded("another ledger rebuild started while this one was summing; it finishes the job")
    summary = {
        "budgets": len(spent),
        "contact_windows": len(contacts),
        "request_markers_forgotten": forgotten,
        "spent": {f"{code}/{period}": str(amount) for (code, period), amount in spent.items()},
    }
    log.info("ledger rebuilt from the decisions table: %s", summary)
    return summary


def reconcile_ledger_job(force: bool = False, grace_s: float = REBUILD_GRACE_S) -> dict[str, Any]:
    """RQ entry point (cron tick, every minute): rebuild when Redis lost the ready mark (a
    restart without its data) and no rebuild is under way, or always with ``force``."""
    connection = current_job_connection()
    ledger = BudgetLedger(connection)
    if not force and (ledger.is_ready() or ledger.rebuilding()):
        return {"rebuilt": False}
    try:
        return {"rebuilt": True, **reconcile_ledger(job_sessionmaker(), connection, grace_s=grace_s)}
    except RebuildSuperseded as exc:
        log.info("%s", exc)
        return {"rebuilt": False, "superseded": True}
