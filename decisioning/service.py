"""The decision use case (DESIGN §4): profile + context → pure core → reservation → exposure
and ledger row. One code path for a single contact and for a batch of up to 10,000, in four
round trips whatever the size: one Redis pipeline (rate limit, config version, contact windows
and spend), one database read (replays, profiles, recorded arms: ``decisioning.store``), one
Redis reservation, one database write (exposures, decisions, charges). A bulk call writes in
chunks, the database storing one while the next is decided.

Money is never overspent:

* the core chooses against spend read from Redis (advisory); the reservation re-checks and
  charges atomically in one Lua script keyed by the request (``decisioning.ledger``), so a
  race can turn a choice into "no action", never into an overspend;
* a retried request (same caller + request id) replays the stored reservation — never a second
  charge — and, once its decision row exists, gets the stored answer (another body: 409);
* Redis down: the core is told spend is unknown, so paid actions fail closed (``degraded``);
* if the decision row cannot be written after a reservation, the reservation is released
  (in a bulk call: the reservations of the chunks not stored).

Deadline: a contact whose decision is not ready within ``deadline_ms`` (default 50 ms) before
reserving gets no action (reason ``deadline``), and nothing is charged. A batch of n contacts
has n times that budget (10,000 contacts: 500 s), so an outbound batch is never refused
wholesale for being a batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import orjson
import redis
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from decisioning.core import DecisionRequest, DecisionState, decide
from decisioning.ledger import (
    LEDGER_READY_KEY,
    NOT_READY,
    RESERVATION_TO_ROW_S,
    BudgetLedger,
    BudgetLimit,
    ContactLimit,
    LedgerUnavailable,
    Reservation,
    ReserveRequest,
    StateReads,
    period_key_for,
)
from decisioning.models import Decision
from decisioning.schemas import DecisionIn
from decisioning.snapshot import DecisionSnapshot
from decisioning.snapshot_cache import LoadedConfig, SnapshotCache
from decisioning.store import Contact, DecisionStore, Replays, RequestKey, SqlStore, StoreConnection, StoreUnavailable
from infra.config_version import CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY, parse_version
from infra.db import utcnow
from infra.errors import ApiError, BadRequest, Conflict

log = logging.getLogger("carepilot.decisions")
DEFAULT_DEADLINE_MS = 50.0
REDIS_RETRY_AFTER_S = 1.0
WRITE_CHUNK = 2_000  # contacts per decision write in a bulk call
MAX_REQUEST_ID_LENGTH = 128  # the decisions.request_id column


class DecisionStoreUnavailable(ApiError):
    status, code = 503, "decisions_unavailable"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


@dataclass
class DecisionContext:
    """What a process needs to decide: its database, its Redis and its snapshot cache."""

    session_factory: sessionmaker[Session]
    redis_client: Any
    cache: SnapshotCache = field(default_factory=SnapshotCache)
    deadline_ms: float = DEFAULT_DEADLINE_MS

    ledger: BudgetLedger = field(init=False)
    store: DecisionStore = field(init=False)
    batcher: Any = field(init=False, default=None, repr=False)  # decisioning.batcher, made on first use
    # after a Redis failure, skip Redis for a moment: a hung server would otherwise cost a
    # timeout per round trip on every decision, far past the deadline
    redis_down_until: float = 0.0

    def __post_init__(self) -> None:
        self.ledger = BudgetLedger(self.redis_client)
        self.store = make_store(self.session_factory)

    def redis_usable(self) -> bool:
        return time.monotonic() >= self.redis_down_until

    def redis_failed(self) -> None:
        self.redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S


def make_store(session_factory: sessionmaker[Session]) -> DecisionStore:
    """The fastest store for the database behind ``session_factory``."""
    bind = session_factory.kw.get("bind")
    if bind is not None and bind.dialect.name == "postgresql" and bind.dialect.driver == "psycopg":
        from decisioning.store_pg import PostgresStore

        return PostgresStore(session_factory)
    return SqlStore(session_factory)


def request_hash(body: DecisionIn) -> str:
    """SHA-256 of the canonical request (what "the same request" means for idempotency)."""
    payload = body.model_dump(exclude={"request_id"})
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --- reading -----------------------------------------------------------------------------------


def _state_requests(snapshot: DecisionSnapshot, contacts: list[Contact]) -> list[Any]:
    """What to read from the ledger for these contacts: their channel's contact window and
    every budget's current period."""
    periods = [(b.code, period_key_for(b)) for b in snapshot.budgets]
    requests = []
    for c in contacts:
        rule = snapshot.contact_rules.get(c.body.channel)
        requests.append((c.body.subscriber_id, {c.body.channel: rule.window_days * 86_400} if rule else {}, periods))
    return requests


def _ledger_states(
    ctx: DecisionContext, snapshot: DecisionSnapshot, contacts: list[Contact], now: datetime, ledger_ok: bool
) -> list[DecisionState]:
    """Contacts in window and spend, for every contact in one round trip; degraded states
    (spend unknown: paid actions fail closed) when Redis cannot be read."""
    if ledger_ok:
        try:
            readings = ctx.ledger.read_states(_state_requests(snapshot, contacts), now)
            return _states(contacts, readings)
        except LedgerUnavailable:
            ctx.redis_failed()
    return [DecisionState(degraded=True, sticky_arms=c.sticky) for c in contacts]


def _states(contacts: list[Contact], readings: list[Any]) -> list[DecisionState]:
    return [
        DecisionState(contacts_in_window=r[0], spent_by_budget=r[1], sticky_arms=c.sticky)
        for c, r in zip(contacts, readings)
    ]


# --- writing -----------------------------------------------------------------------------------


def _refuse(contact: Contact, code: str, message: str) -> None:
    """Turn the contact's chosen action into "no action", first reason ``code``."""
    body = contact.response
    assert body is not None and body["action"] is not None
    offer_code = body["action"]["offer_code"]
    body["action"] = None
    body["reasons"].insert(0, {"offer_code": offer_code, "code": code, "message": message})


_LEDGER_DOWN = "budget service unavailable: paid actions are held back until it is back"
IN_PROGRESS = "request_in_progress"
EARLIER_ATTEMPT_DEAD_AFTER_S = RESERVATION_TO_ROW_S  # reserved this long ago, no row: that attempt is dead
REFUSALS = {
    IN_PROGRESS: "an earlier attempt of this request was still being decided: no action was taken and nothing charged",
    "budget_exhausted": "budget {budget} is spent for this period",
    "pacing": "budget {budget} is ahead of its pace for this period",
    "contact_cap": "contact cap reached on {channel}",
}


def _reserve(
    ctx: DecisionContext,
    snapshot: DecisionSnapshot,
    contacts: list[Contact],
    now: datetime,
    started: float,
    call_size: int,
) -> None:
    """Charge every chosen action atomically (one pipelined round trip for the batch), or turn
    it into "no action" with the reason."""
    held: list[tuple[Contact, ReserveRequest]] = []
    limits: dict[str, BudgetLimit] = {}  # one per budget: the same cap and pace for every contact
    # the deadline is per decision: a call of n contacts has n times the time of one
    late = (time.perf_counter() - started) * 1000 > ctx.deadline_ms * max(1, call_size)
    for c in contacts:
        result = c.result
        if result is None or result.action is None:
            continue
        if late:
            _refuse(c, "deadline", f"no answer within the {ctx.deadline_ms:g} ms deadline: no action, nothing charged")
            continue
        rule = snapshot.contact_rules.get(c.body.channel)
        contact_limit = ContactLimit.from_rule(rule, c.body.subscriber_id) if rule else None
        budgets = tuple(
            limits.get(code) or limits.setdefault(code, BudgetLimit.from_rule(snapshot.budgets_by_code[code], now))
            for code in result.budgets_to_reserve
        )
        if contact_limit is None and not budgets:
            continue  # free and uncapped: nothing to hold
        held.append(
            (c, ReserveRequest(f"{c.caller}|{c.request_id}", Decimal(str(result.action.cost)), budgets, contact_limit))
        )
    if not held:
        return
    try:
        if not ctx.redis_usable():
            raise LedgerUnavailable("Redis failed a moment ago")
        reservations = ctx.ledger.reserve_many([request for _, request in held], now)
    except LedgerUnavailable:
        ctx.redis_failed()
        for c, request in held:
            assert c.response is not None
            c.response["degraded"] = True
            if Decimal(str(request.cost)) > 0:
                _refuse(c, "degraded", _LEDGER_DOWN)
        return
    reservations = _settle_earlier_attempts(ctx, held, reservations, now)
    for (c, request), reservation in zip(held, reservations):
        if reservation.reason == NOT_READY:  # the counters went away since the preflight
            assert c.response is not None
            c.response["degraded"] = True
            _refuse(c, "degraded", _LEDGER_DOWN)
            continue
        if not reservation.ok:
            template = REFUSALS.get(str(reservation.reason), str(reservation.reason))
            _refuse(c, str(reservation.reason), template.format(budget=reservation.budget_code, channel=c.body.channel))
            continue
        c.reserved_key = None if reservation.replayed else request.request_key
        c.reserved_attempt = reservation.attempt
        c.charges = tuple((charge.code, charge.period_key, charge.amount) for charge in reservation.charged)


def _settle_earlier_attempts(
    ctx: DecisionContext, held: list[tuple[Contact, ReserveRequest]], reservations: list[Reservation], now: datetime
) -> list[Reservation]:
    """A replayed reservation belongs to an earlier attempt of the same request, whose decision
    row was not there when this attempt read. If it charged what this decision charges, this
    call took it over (``Reservation.adopted``). If not (the earlier attempt chose otherwise,
    then failed before storing its row, or is still running):

    * reserved more than ``EARLIER_ATTEMPT_DEAD_AFTER_S`` ago (wall clock), that attempt is
      dead (no decision takes that long from its reservation to its row): its reservation is
      released — only if it still holds it — and this decision's made, so the row and the
      counters agree on what was charged;
    * younger, it may still store its row: this attempt takes no action and charges nothing
      (``request_in_progress``), and the earlier attempt keeps its reservation to record or
      release.
    """
    wall_ms = time.time() * 1000
    dead: list[int] = []
    settled = list(reservations)
    for i, ((_, request), reservation) in enumerate(zip(held, reservations)):
        if not reservation.replayed or reservation.adopted:
            continue
        if wall_ms - (reservation.reserved_at_ms or 0) > EARLIER_ATTEMPT_DEAD_AFTER_S * 1000:
            dead.append(i)
        else:
            settled[i] = Reservation(request.request_key, False, IN_PROGRESS, reservation.cost_cents)
    if dead:
        try:
            released = [
                i for i in dead if ctx.ledger.release(held[i][1].request_key, attempt=reservations[i].attempt).released
            ]
            for i, reservation in zip(released, ctx.ledger.reserve_many([held[i][1] for i in released], now)):
                settled[i] = reservation
            for i in set(dead) - set(released):  # another retry settled it first
                settled[i] = Reservation(held[i][1].request_key, False, IN_PROGRESS, reservations[i].cost_cents)
        except LedgerUnavailable:  # the earlier charge stays (money held back, never overspent)
            for i in dead:
                settled[i] = Reservation(held[i][1].request_key, False, IN_PROGRESS, reservations[i].cost_cents)
    return settled


# --- the use case ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One contact's result in a batch: its answer, or the error its request gets instead."""

    response: dict[str, Any] | None = None
    error: BaseException | None = None

    def answer(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


def new_ids(count: int) -> list[str]:
    """``count`` random 128-bit ids as 32 hex digits (decision ids, request ids made up for
    callers that gave none): one read of the system's random source for them all, where
    ``uuid4()`` costs a read and a UUID object each (a tenth of a bulk call's deciding)."""
    digits = os.urandom(16 * count).hex()
    return [digits[i : i + 32] for i in range(0, 32 * count, 32)]


def new_contact(
    index: int,
    caller: str,
    body: DecisionIn,
    idempotency_key: str | None = None,
    *,
    call_hash: str | None = None,
    body_hash: str | None = None,
) -> Contact:
    """A contact of a request: its request id is the body's, else the Idempotency-Key, else a
    new one. In a bulk call (``call_hash`` given: :func:`bulk_call_hash`) a contact without its
    own request id is ``<key>#<index>``, and it is "the same request" only as part of the same
    call: its hash covers the whole call, so the key sent again with another batch is a 409."""
    body_hash = body_hash or request_hash(body)
    if body.request_id:
        return Contact(index, caller, body, body.request_id, body_hash)
    if idempotency_key and call_hash is not None:
        in_call = hashlib.sha256(f"{call_hash}:{body_hash}".encode()).hexdigest()
        return Contact(index, caller, body, f"{idempotency_key}#{index}", in_call)
    return Contact(index, caller, body, idempotency_key or new_ids(1)[0], body_hash)


def bulk_call_hash(bodies: Sequence[DecisionIn], body_hashes: Sequence[str]) -> str:
    """SHA-256 of a whole bulk call: every contact's request id (if any) and request hash, in order."""
    return hashlib.sha256(
        "\n".join(f"{body.request_id or ''}:{digest}" for body, digest in zip(bodies, body_hashes)).encode()
    ).hexdigest()


def decide_contacts(
    ctx: DecisionContext,
    caller: str,
    bodies: Sequence[DecisionIn],
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    rate_limit_per_s: int | None = None,
    bulk: bool = False,
) -> list[dict[str, Any]]:
    """Decide for every contact of one request, in order; returns the response bodies
    (DESIGN §7). All or nothing for request errors: nothing is decided when one contact's
    request id clashes or the caller is over its rate limit. ``bulk``: a bulk call, whose
    ``idempotency_key`` covers the whole call (:func:`new_contact`).

    Raises Conflict (409 ``idempotency_conflict``) when a request id was used before with
    another body, RateLimited (429) when ``rate_limit_per_s`` is given and exceeded, and
    DecisionStoreUnavailable (503) when the database cannot be read or written.
    """
    hashes = [request_hash(body) for body in bodies]
    call_hash = None
    if bulk and idempotency_key:
        keyed = [i for i, body in enumerate(bodies) if body.request_id]
        if keyed:  # the key would protect nothing for them: another body under it would not be a 409
            raise BadRequest(
                f"a bulk call's Idempotency-Key keys every contact (<key>#<index>); send it or "
                f"request ids on the contacts, not both ({len(keyed)} contacts have one)",
                code="idempotency_mismatch",
                details=[
                    {"path": f"$.contacts[{i}].request_id", "message": "drop it, or the header"} for i in keyed[:10]
                ],
            )
        longest = len(f"{idempotency_key}#{len(bodies) - 1}")
        if longest > MAX_REQUEST_ID_LENGTH:
            room = MAX_REQUEST_ID_LENGTH - (longest - len(idempotency_key))
            raise BadRequest(
                f"the Idempotency-Key is too long for a call of {len(bodies)} contacts: each contact's "
                f"request id is the key, '#' and its index, at most {MAX_REQUEST_ID_LENGTH} "
                f"characters, so use a key of at most {room}",
                code="invalid_header",
            )
        call_hash = bulk_call_hash(bodies, hashes)
    contacts = [
        new_contact(index, caller, body, idempotency_key, call_hash=call_hash, body_hash=digest)
        for index, (body, digest) in enumerate(zip(bodies, hashes))
    ]
    seen: set[str] = set()
    for c in contacts:
        if c.request_id in seen:
            raise Conflict(
                f"request id {c.request_id!r} appears twice in one call; each contact needs its own",
                code="duplicate_request_id",
                details=[{"path": f"$.contacts[{c.index}].request_id", "message": "repeated"}],
            )
        seen.add(c.request_id)
    return [
        outcome.answer()
        for outcome in decide_batch(ctx, contacts, {caller: rate_limit_per_s}, now=now, all_or_nothing=True)
    ]


def decide_batch(
    ctx: DecisionContext,
    contacts: list[Contact],
    rate_limits: dict[str, int | None],
    *,
    now: datetime | None = None,
    all_or_nothing: bool = False,
) -> list[Outcome]:
    """Decide for contacts of one or many requests (callers) at once, in four round trips: one
    Redis pipeline (rate limits, config version, contact windows and spend), one database read
    (replays, profiles, recorded arms, config generation), one Redis reservation, one database
    write (exposures, decisions, charges); a batch that finds the config moved reloads it and
    reads again. Each contact's (caller, request id) must be unique in the batch.

    ``all_or_nothing`` (one request): an idempotency clash or the rate limit raises before
    anything is decided. Otherwise (single decisions batched together: ``decisioning.batcher``)
    such an error is that contact's outcome and the others go on. DecisionStoreUnavailable
    (503) is raised for the whole batch.
    """
    started = time.perf_counter()
    now = now or utcnow()
    cached = ctx.cache.loaded
    version, ledger_ok, early_states, limited = _preflight(ctx, contacts, cached, now, rate_limits)
    for c in contacts:
        if c.caller in limited:
            limit = rate_limits[c.caller]
            c.error = RateLimited(
                f"more than {limit} decisions per second for this key; retry after a second",
                details={"limit_per_s": limit, "retry_after_s": 1},
            )
            if all_or_nothing:
                raise c.error
    replays: Replays = {}
    try:
        config = ctx.cache.current(ctx.session_factory, version, now)
        snapshot, experiments = config
        live = [c for c in contacts if c.error is None]
        with ctx.store.connect() as db:
            # a retry must not be decided (or charged) again: answer it with the stored decision
            replays = db.read(live, experiments) if live else {}
            if live and db.config_generation is not None and db.config_generation > snapshot.version:
                # a config change Redis did not announce (it was away when the change committed)
                config = ctx.cache.current(ctx.session_factory, version, now, generation=db.config_generation)
                snapshot, experiments = config
                replays = db.read(live, experiments)  # the recorded arms of its experiments
            _refuse_clashes(live, replays, len(contacts), all_or_nothing)
            fresh = [c for c in live if c.error is None and c.key not in replays]
            if fresh:
                if early_states is not None and config is cached:
                    states = _states(fresh, [early_states[c.key] for c in fresh])
                else:  # the config moved (or Redis was skipped): read against the new snapshot
                    states = _ledger_states(ctx, snapshot, fresh, now, ledger_ok)
                lost = _decide_reserve_store(ctx, db, config, fresh, states, now, started)
                if lost:  # a concurrent retry stored these first: answer with what it stored
                    losers = [c for c in fresh if c.key in lost]
                    again = db.stored([c.key for c in losers])
                    _release_unrecorded(ctx, db, losers)
                    _refuse_clashes(losers, again, len(contacts), all_or_nothing)
                    replays.update(again)
    except (StoreUnavailable, OperationalError) as exc:  # the snapshot loads through SQLAlchemy
        log.error("decision store unavailable: %s", exc)
        raise DecisionStoreUnavailable("the decision store (database) is unavailable; retry shortly") from None
    outcomes = []
    for c in contacts:
        if c.error is not None:
            outcomes.append(Outcome(error=c.error))
        elif c.key in replays:
            outcomes.append(Outcome({**replays[c.key][1], "replayed": True}))
        else:
            outcomes.append(Outcome(c.response))
    return outcomes


def _decide_reserve_store(
    ctx: DecisionContext,
    db: StoreConnection,
    config: LoadedConfig,
    fresh: list[Contact],
    states: list[DecisionState],
    now: datetime,
    started: float,
) -> set[RequestKey]:
    """Decide, reserve and store the fresh contacts, ``WRITE_CHUNK`` at a time; returns the
    requests another request stored first. In a bulk call the database writes a chunk while
    this thread decides the next one (the write is mostly the database server's work, on
    another core), but at most one write is in flight: the next chunk is reserved only once the
    previous write is done, so each write starts as soon as its chunk is reserved and ends
    within the store's statement bound (the reconcile counts on a row within
    RESERVATION_TO_ROW_S of its reservation; queued behind other writes, it could come later).
    A chunk whose write fails has its reservations released, nothing more is reserved, and the
    error is raised once every chunk sent is accounted for: stored chunks stay stored and
    charged."""
    snapshot, experiments = config
    overlap = len(fresh) > WRITE_CHUNK and db.writes_concurrently
    writer = ThreadPoolExecutor(1, thread_name_prefix="decision-writer") if overlap else None
    sent: list[tuple[list[Contact], Future[set[RequestKey]]]] = []
    try:
        for start in range(0, len(fresh), WRITE_CHUNK):
            chunk = fresh[start : start + WRITE_CHUNK]
            created_at = now.isoformat()
            for c, state, decision_id in zip(chunk, states[start : start + WRITE_CHUNK], new_ids(len(chunk))):
                c.result = decide(
                    snapshot,
                    DecisionRequest(c.body.subscriber_id, c.body.channel, c.profile, c.body.context),
                    state,
                    now,
                )
                c.response = {
                    "decision_id": decision_id,
                    **c.result.as_json(),
                    "created_at": created_at,
                    "replayed": False,
                }
            if sent and sent[-1][1].exception() is not None:  # waits for the write in flight
                break  # the database failed: charge nothing more
            _reserve(ctx, snapshot, chunk, now, started, len(fresh))
            future: Future[set[RequestKey]] = Future()
            if writer is not None:
                future = writer.submit(db.write, chunk, experiments, snapshot.version, now)
            else:
                try:
                    future.set_result(db.write(chunk, experiments, snapshot.version, now))
                except Exception as exc:
                    future.set_exception(exc)
            sent.append((chunk, future))
            if future.done() and future.exception() is not None:
                break  # the database failed: decide (and charge) nothing more
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
    lost: set[RequestKey] = set()
    failures: list[BaseException] = []
    for chunk, future in sent:
        error = future.exception()
        if error is None:
            lost |= future.result()
        else:
            _settle_failed_write(ctx, chunk)
            failures.append(error)
    if failures:
        raise failures[0]
    return lost


def _preflight(
    ctx: DecisionContext,
    contacts: list[Contact],
    cached: LoadedConfig | None,
    now: datetime,
    rate_limits: dict[str, int | None],
) -> tuple[tuple[str, int] | None, bool, dict[RequestKey, Any] | None, set[str]]:
    """One Redis round trip before deciding: count each caller's decisions against its rate
    limit (a fixed one-second window), read the config version, the ledger's ready mark and,
    against the snapshot this process has, the contact windows and spend. Returns (version,
    ledger usable, readings by request or None, the callers over their limit). The ledger is
    not usable when Redis is down or its counters are being rebuilt (no ready mark): decisions
    degrade, paid actions fail closed. Without Redis no limit is enforced."""
    if not ctx.redis_usable():
        return None, False, None, set()
    counts: dict[str, int] = {}
    for c in contacts:
        counts[c.caller] = counts.get(c.caller, 0) + 1
    limited_callers = [caller for caller, limit in rate_limits.items() if limit is not None and caller in counts]
    try:
        pipe = ctx.redis_client.pipeline(transaction=False)
        second = int(time.time())
        for caller in limited_callers:
            window = f"cp:rate:{caller}:{second}"
            pipe.incrby(window, counts[caller])
            pipe.expire(window, 2)
        pipe.mget(CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY, LEDGER_READY_KEY)
        version_at = len(pipe) - 1
        reads: StateReads | None = None
        if cached is not None:
            reads = ctx.ledger.queue_state_reads(pipe, _state_requests(cached.snapshot, contacts), now)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[:-1] if reads is not None else replies:
            if isinstance(reply, Exception):
                raise reply
        version = parse_version(ctx.redis_client, replies[version_at][:2])
    except (redis.RedisError, OSError):
        ctx.redis_failed()
        return None, False, None, set()
    over = {caller for i, caller in enumerate(limited_callers) if replies[2 * i] > rate_limits[caller]}
    if over:  # a refused call decides nothing, so it gives its count back: the caller's next call may fit
        try:
            refund = ctx.redis_client.pipeline(transaction=False)
            for caller in over:
                refund.decrby(f"cp:rate:{caller}:{second}", counts[caller])
            refund.execute()
        except (redis.RedisError, OSError):
            pass  # the window ends within the second anyway
    if replies[version_at][2] is None:  # the counters are being rebuilt: spend unknown
        return version, False, None, over
    if reads is None or isinstance(replies[-1], Exception):  # NOSCRIPT: decide_batch reads again
        return version, True, None, over
    return version, True, {c.key: r for c, r in zip(contacts, reads.readings(replies[-1]))}, over


def _refuse_clashes(contacts: list[Contact], replays: Replays, call_size: int, all_or_nothing: bool) -> None:
    """Contacts whose request id was stored with another body get a 409 (all_or_nothing: the
    whole call does, naming every clash)."""
    clashes = [c for c in contacts if c.key in replays and replays[c.key][0] != c.request_hash]
    if not clashes:
        return
    if all_or_nothing:
        raise _clash(clashes, call_size)
    for c in clashes:
        c.error = _clash([c], 1)


def _clash(clashes: list[Contact], call_size: int) -> Conflict:
    return Conflict(
        "a request id was used before with another body; send the same body to get the stored "
        "decision, or use a new request id",
        code="idempotency_conflict",
        details=[
            {
                "path": f"$.contacts[{c.index}]" if call_size > 1 else "$",
                "message": f"request id {c.request_id!r} was used with another body",
            }
            for c in clashes
        ],
    )


def _release_unrecorded(ctx: DecisionContext, db: StoreConnection, losers: list[Contact]) -> None:
    """A request that lost the insert to a concurrent retry of itself keeps no charge the
    stored decision does not record: if the winner charged, it replayed this very
    reservation (same request key) and nothing is released; if it did not, the charge made
    here is refunded."""
    charging = [c for c in losers if c.reserved_key]
    if not charging:
        return
    recorded = db.charged([c.key for c in charging])
    _release(ctx, [c for c in charging if c.key not in recorded])


def _settle_failed_write(ctx: DecisionContext, chunk: list[Contact]) -> None:
    """Release the reservations of a chunk whose write failed, but only those with no row: a
    connection lost after the database committed loses just the answer, and a refund then
    would leave Redis below the ledger of record. Asked on a connection of its own; if the
    database cannot say, the reservations stay and the ledger's ready mark is taken away, so
    the reconcile rebuilds the counters from the rows (paid actions wait for it): money held
    back for a while, never overspent."""
    try:
        with ctx.store.connect() as db:
            stored = db.stored([c.key for c in chunk])
    except (StoreUnavailable, OperationalError) as exc:
        log.error(
            "a decision write failed and the database cannot say what it stored (%s): reservations kept, "
            "the budget counters will be rebuilt from the ledger of record",
            exc,
        )
        try:
            ctx.redis_client.delete(LEDGER_READY_KEY)
        except (redis.RedisError, OSError):
            log.error("could not ask for the rebuild either: run `flask --app wsgi reconcile-ledger`")
        return
    _release(ctx, [c for c in chunk if c.key not in stored])


def _release(ctx: DecisionContext, contacts: list[Contact]) -> None:
    for c in contacts:
        if c.reserved_key:
            try:
                ctx.ledger.release(c.reserved_key, attempt=c.reserved_attempt)
            except LedgerUnavailable:  # the counter stays above the ledger: money held back, not overspent
                log.warning("could not release reservation %s", c.reserved_key)


def get_decision(session: Session, decision_id: str) -> Decision | None:
    return session.get(Decision, decision_id)


def decision_json(decision: Decision) -> dict[str, Any]:
    """A stored decision with its explanation, as it was answered."""
    return {
        **decision.response,
        "replayed": False,
        "request_id": decision.request_id,
        "snapshot_version": decision.snapshot_version,
    }
