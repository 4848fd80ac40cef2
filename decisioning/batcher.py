"""Single decisions that arrive together in one web process are decided together.

Each decision costs four round trips (``decisioning.service``) whatever the number of contacts,
and on this kind of machine a round trip's cost, not the decision logic, sets the ceiling. So
the web process's threads queue their contacts here: one of them (the leader) takes everything
queued, runs the service once for all of it, hands each waiting thread its own answer or its own
error (a 409 or a 429 stays with the request that caused it), and passes the lead to the next
waiting thread. Nothing waits for a batch to fill: a request that finds no leader decides at once
(a batch of one), and requests that arrive while a batch runs form the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from decisioning.schemas import DecisionIn
from decisioning.service import DecisionContext, Outcome, decide_batch, new_contact
from infra.db import utcnow

MAX_BATCH = 64


@dataclass
class _Ticket:
    caller: str
    body: DecisionIn
    idempotency_key: str | None
    rate_limit_per_s: int | None
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead the next batch rather than with an answer
    outcome: Outcome | None = None


class DecisionBatcher:
    """One per decision context (per web process). ``batches`` and ``decided`` count what it
    has done (their ratio is the mean batch size)."""

    def __init__(
        self, ctx: DecisionContext, max_batch: int = MAX_BATCH, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.ctx = ctx
        self.max_batch = max_batch
        self.clock = clock
        self.batches = 0
        self.decided = 0
        self._lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._leading = False

    def decide(
        self, caller: str, body: DecisionIn, *, idempotency_key: str | None = None, rate_limit_per_s: int | None = None
    ) -> dict[str, Any]:
        """The answer to one contact, as ``decide_contacts`` gives it; raises its errors."""
        ticket = _Ticket(caller, body, idempotency_key, rate_limit_per_s)
        with self._lock:
            self._queue.append(ticket)
            ticket.lead = not self._leading
            self._leading = True
        while True:
            if not ticket.lead:
                ticket.done.wait()
            if not ticket.lead:
                break
            ticket.lead = False
            self._run_batch()
            if ticket.outcome is not None:
                break
        assert ticket.outcome is not None
        return ticket.outcome.answer()

    def _take(self) -> list[_Ticket]:
        """Up to ``max_batch`` queued tickets from the front, one per (caller, request id):
        a retry racing its own first try waits for the next batch and replays it."""
        batch: list[_Ticket] = []
        keys: set[tuple[str, str]] = set()
        rest: list[_Ticket] = []
        for ticket in self._queue:
            key = (ticket.caller, ticket.body.request_id or ticket.idempotency_key or "")
            if len(batch) < self.max_batch and (not key[1] or key not in keys):
                batch.append(ticket)
                keys.add(key)
            else:
                rest.append(ticket)
        self._queue = rest
        return batch

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._take()
        self.batches += 1  # only the leader counts: one thread at a time
        self.decided += len(batch)
        # whatever goes wrong, every ticket gets an outcome and the lead is passed on below: a
        # leader that left without doing so would leave every later request waiting for ever
        deciding: list[_Ticket] = []
        contacts = []
        for ticket in batch:  # each its own request; one that cannot be read fails alone
            try:
                contacts.append(new_contact(0, ticket.caller, ticket.body, ticket.idempotency_key))
                deciding.append(ticket)
            except Exception as exc:
                ticket.outcome = Outcome(error=exc)
        try:
            limits = {t.caller: t.rate_limit_per_s for t in deciding}
            outcomes = decide_batch(self.ctx, contacts, limits, now=self.clock()) if contacts else []
        except BaseException as exc:
            outcomes = [Outcome(error=exc) for _ in deciding]
        for ticket, outcome in zip(deciding, outcomes):
            ticket.outcome = outcome
        with self._lock:
            following = self._queue[0] if self._queue else None
            if following is None:
                self._leading = False
            else:
                following.lead = True
        for ticket in batch:
            ticket.done.set()
        if following is not None:
            following.done.set()
