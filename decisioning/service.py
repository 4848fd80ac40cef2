"""The decision use case (DESIGN §4): profile + context → pure core → exposure → reservation
→ ledger row. One code path for a single contact and for a batch of up to 10,000: the batch
is read with one query per table and one Redis round trip per step, so a bulk call costs a
few round trips, not a few per contact.

Money is never overspent:

* the core chooses against spend read from Redis (advisory); the reservation re-checks and
  charges atomically in one Lua script keyed by the request (``decisioning.ledger``), so a
  race can turn a choice into "no action", never into an overspend;
* a retried request (same caller + request id) replays the stored reservation — never a second
  charge — and, once its decision row exists, gets the stored answer (another body: 409);
* Redis down: the core is told spend is unknown, so paid actions fail closed (``degraded``);
* if the decision row cannot be written after a reservation, the reservation is released.

Deadline: a contact whose decision is not ready within ``deadline_ms`` (default 50 ms) before
reserving gets no action (reason ``deadline``), and nothing is charged.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from contextlib import nullcontext
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import redis
from sqlalchemy import BigInteger, Boolean, String, cast, literal, null, select, tuple_, union_all
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from decisioning.core import DecisionRequest, DecisionResult, DecisionState, decide
from decisioning.ledger import (BudgetLedger, BudgetLimit, ContactLimit, LedgerUnavailable, ReserveRequest,
                                period_key_for)
from decisioning.models import BudgetCharge, Decision
from decisioning.schemas import DecisionIn
from decisioning.snapshot import DecisionSnapshot
from decisioning.snapshot_cache import SnapshotCache
from experiments.models import Exposure
from infra.config_version import CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY, parse_version
from infra.db import JsonType, utcnow
from infra.errors import ApiError, Conflict
from offers.models import Subscriber

log = logging.getLogger("carepilot.decisions")
DEFAULT_DEADLINE_MS = 50.0
REDIS_RETRY_AFTER_S = 1.0
IN_CHUNK = 1000  # ids per IN (...) list


class DecisionStoreUnavailable(ApiError):
    status, code = 503, "decisions_unavailable"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"
    headers = {"Retry-After": "1"}


@dataclass
class DecisionContext:
    """What a process needs to decide: its database, its Redis and its snapshot cache."""

    session_factory: sessionmaker
    redis_client: Any
    cache: SnapshotCache = field(default_factory=SnapshotCache)
    deadline_ms: float = DEFAULT_DEADLINE_MS

    ledger: BudgetLedger = field(init=False)
    # after a Redis failure, skip Redis for a moment: a hung server would otherwise cost a
    # timeout per round trip on every decision, far past the deadline
    redis_down_until: float = 0.0

    def __post_init__(self) -> None:
        self.ledger = BudgetLedger(self.redis_client)

    def redis_usable(self) -> bool:
        return time.monotonic() >= self.redis_down_until

    def redis_failed(self) -> None:
        self.redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S


@dataclass
class _Contact:
    """One contact as it goes through the steps."""

    index: int
    body: DecisionIn
    request_id: str
    request_hash: str
    profile: dict[str, Any] = field(default_factory=dict)
    sticky: dict[str, tuple[str | None, bool]] = field(default_factory=dict)
    assignment_ids: dict[str, int] = field(default_factory=dict)
    result: DecisionResult | None = None
    response: dict[str, Any] | None = None
    charges: tuple[tuple[str, str, Decimal], ...] = ()
    reserved_key: str | None = None  # the ledger request key, when a reservation was charged


def request_hash(body: DecisionIn) -> str:
    """SHA-256 of the canonical request (what "the same request" means for idempotency)."""
    payload = body.model_dump(exclude={"request_id"})
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _chunks(items: Sequence[Any], size: int = IN_CHUNK):  # type: ignore[no-untyped-def]
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- reading -----------------------------------------------------------------------------------

def _existing(session: Session, caller: str, contacts: list[_Contact]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Stored decisions of these request ids: request id → (request hash, response)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    ids = [c.request_id for c in contacts]
    for chunk in _chunks(ids):
        rows = session.execute(select(Decision.request_id, Decision.request_hash, Decision.response)
                               .where(Decision.caller == caller, Decision.request_id.in_(chunk)))
        found.update({rid: (digest, response) for rid, digest, response in rows})
    return found


def _read_contacts(session: Session, caller: str, contacts: list[_Contact],
                   experiments: dict[str, tuple[int, int]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Everything the decisions need from the database, in one statement per 1,000 contacts
    (a UNION ALL of three reads — one round trip on the hot path instead of three): the
    stored decisions of these request ids (returned: request id → (hash, response)), the
    profiles (set on the contacts), and the arms recorded for them in running experiments."""
    by_id = {ids[0]: key for key, ids in experiments.items()}
    replays: dict[str, tuple[str, dict[str, Any]]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    sticky: dict[str, list[tuple[str, int, str | None, bool]]] = {}
    no_int, no_flag, no_json = cast(null(), BigInteger), cast(null(), Boolean), cast(null(), JsonType)
    for chunk in _chunks(contacts):
        request_ids = [c.request_id for c in chunk]
        subscriber_ids = list({c.body.subscriber_id for c in chunk})
        parts = [
            select(literal("d").label("kind"), Decision.request_id.label("key"),
                   Decision.request_hash.label("text"), no_int.label("id"), no_int.label("experiment_id"),
                   no_flag.label("flag"), Decision.response.label("json"))
            .where(Decision.caller == caller, Decision.request_id.in_(request_ids)),
            select(literal("p"), Subscriber.id, cast(null(), String), no_int, no_int, no_flag, Subscriber.attributes)
            .where(Subscriber.id.in_(subscriber_ids))]
        if by_id:
            parts.append(select(literal("a"), Exposure.subscriber_id, Exposure.arm_key, Exposure.id,
                                Exposure.experiment_id, Exposure.in_holdout, no_json)
                         .where(Exposure.experiment_id.in_(list(by_id)), Exposure.subscriber_id.in_(subscriber_ids)))
        for kind, key, text, row_id, experiment_id, flag, document in session.execute(union_all(*parts)):
            if kind == "d":
                replays[key] = (text, document)
            elif kind == "p":
                profiles[key] = document
            else:
                sticky.setdefault(key, []).append((by_id[experiment_id], row_id, text, bool(flag)))
    for c in contacts:
        c.profile = profiles.get(c.body.subscriber_id) or {}
        for experiment_key, exposure_id, arm_key, in_holdout in sticky.get(c.body.subscriber_id, ()):
            c.sticky[experiment_key] = (arm_key, in_holdout)
            c.assignment_ids[experiment_key] = exposure_id
    return replays


def _ledger_states(ctx: DecisionContext, snapshot: DecisionSnapshot, contacts: list[_Contact],
                   now: datetime, redis_ok: bool) -> list[DecisionState]:
    """Contacts in window and spend, for every contact in one round trip; degraded states
    (spend unknown: paid actions fail closed) when Redis cannot be read."""
    if redis_ok:
        periods = [(b.code, period_key_for(b)) for b in snapshot.budgets]
        requests = []
        for c in contacts:
            rule = snapshot.contact_rules.get(c.body.channel)
            requests.append((c.body.subscriber_id, {c.body.channel: rule.window_days * 86_400} if rule else {},
                             periods))
        try:
            readings = ctx.ledger.read_states(requests, now)
            return [DecisionState(contacts_in_window=r[0], spent_by_budget=r[1], sticky_arms=c.sticky)
                    for c, r in zip(contacts, readings)]
        except LedgerUnavailable:
            ctx.redis_failed()
    return [DecisionState(degraded=True, sticky_arms=c.sticky) for c in contacts]


# --- writing -----------------------------------------------------------------------------------

def _insert(session: Session, model: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def _record_exposures(session: Session, contacts: list[_Contact], experiments: dict[str, tuple[int, int]],
                      now: datetime) -> None:
    """Insert the first exposures the core made (insert-if-absent: concurrent channels store
    one row) and note their ids on the contacts."""
    new = [(c, c.result.experiment) for c in contacts
           if c.result is not None and c.result.experiment is not None and c.result.experiment.key not in c.sticky
           and c.result.experiment.key in experiments]
    if not new:
        return
    rows = [{"experiment_id": experiments[e.key][0], "subscriber_id": c.body.subscriber_id, "arm_key": e.arm_key,
             "in_holdout": e.in_holdout, "phase": experiments[e.key][1], "tier": c.result.tier,
             "channel": c.body.channel, "first_exposed_at": now} for c, e in new]
    session.execute(_insert(session, Exposure).on_conflict_do_nothing(
        index_elements=["experiment_id", "subscriber_id"]), rows)
    keys = [(experiments[e.key][0], c.body.subscriber_id) for c, e in new]
    ids: dict[tuple[int, str], int] = {}
    for chunk in _chunks(keys):
        ids.update({(eid, sid): xid for eid, sid, xid in session.execute(
            select(Exposure.experiment_id, Exposure.subscriber_id, Exposure.id)
            .where(tuple_(Exposure.experiment_id, Exposure.subscriber_id).in_(chunk)))})
    for c, e in new:
        c.assignment_ids[e.key] = ids[(experiments[e.key][0], c.body.subscriber_id)]


def _refuse(contact: _Contact, code: str, message: str) -> None:
    """Turn the contact's chosen action into "no action", first reason ``code``."""
    body = contact.response
    assert body is not None and body["action"] is not None
    offer_code = body["action"]["offer_code"]
    body["action"] = None
    body["reasons"].insert(0, {"offer_code": offer_code, "code": code, "message": message})


REFUSALS = {"budget_exhausted": "budget {budget} is spent for this period",
            "pacing": "budget {budget} is ahead of its pace for this period",
            "contact_cap": "contact cap reached on {channel}"}


def _reserve(ctx: DecisionContext, snapshot: DecisionSnapshot, caller: str, contacts: list[_Contact],
             now: datetime, started: float) -> None:
    """Charge every chosen action atomically (one pipelined round trip for the batch), or turn
    it into "no action" with the reason."""
    held: list[tuple[_Contact, ReserveRequest]] = []
    late = (time.perf_counter() - started) * 1000 > ctx.deadline_ms
    for c in contacts:
        result = c.result
        if result is None or result.action is None:
            continue
        if late:
            _refuse(c, "deadline", f"no answer within the {ctx.deadline_ms:g} ms deadline: no action, "
                                   f"nothing charged")
            continue
        rule = snapshot.contact_rules.get(c.body.channel)
        contact_limit = ContactLimit.from_rule(rule, c.body.subscriber_id) if rule else None
        budgets = tuple(BudgetLimit.from_rule(snapshot.budgets_by_code[code], now)
                        for code in result.budgets_to_reserve)
        if contact_limit is None and not budgets:
            continue  # free and uncapped: nothing to hold
        held.append((c, ReserveRequest(f"{caller}|{c.request_id}", Decimal(str(result.action.cost)), budgets,
                                       contact_limit)))
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
                _refuse(c, "degraded", "budget service unavailable: paid actions are held back until it is back")
        return
    for (c, request), reservation in zip(held, reservations):
        if not reservation.ok:
            template = REFUSALS.get(str(reservation.reason), str(reservation.reason))
            _refuse(c, str(reservation.reason), template.format(budget=reservation.budget_code,
                                                                channel=c.body.channel))
            continue
        c.reserved_key = None if reservation.replayed else request.request_key
        c.charges = tuple((charge.code, charge.period_key, charge.amount) for charge in reservation.charged)


def _store(session: Session, caller: str, contacts: list[_Contact], snapshot: DecisionSnapshot,
           now: datetime) -> set[str]:
    """Insert the decision rows (insert-if-absent on caller + request id) and their budget
    charges; returns the request ids another request stored first."""
    rows = []
    for c in contacts:
        body, result = c.response, c.result
        assert body is not None and result is not None
        experiment = result.experiment
        action = body["action"]
        rows.append({"id": body["decision_id"], "caller": caller, "request_id": c.request_id,
                     "request_hash": c.request_hash, "subscriber_id": c.body.subscriber_id,
                     "channel": c.body.channel, "tier": result.tier, "risk_level": result.risk_level,
                     "experiment_key": experiment.key if experiment else None,
                     "arm_key": experiment.arm_key if experiment else None,
                     "in_holdout": bool(experiment and experiment.in_holdout),
                     "assignment_id": c.assignment_ids.get(experiment.key) if experiment else None,
                     "offer_code": action["offer_code"] if action else None,
                     "cost": Decimal(str(action["cost"])) if action else Decimal("0"),
                     "probability": body["probability"], "degraded": body["degraded"],
                     "snapshot_version": snapshot.version, "response": body, "created_at": now})
    inserted: set[str] = set()
    for chunk in _chunks(rows):
        inserted.update(session.execute(_insert(session, Decision).on_conflict_do_nothing(
            index_elements=["caller", "request_id"]).returning(Decision.request_id), chunk).scalars())
    charges = [{"decision_id": c.response["decision_id"], "budget_code": code, "period_key": period,
                "amount": amount} for c in contacts if c.request_id in inserted for code, period, amount in c.charges]
    if charges:
        session.execute(_insert(session, BudgetCharge), charges)
    return {c.request_id for c in contacts} - inserted


# --- the use case ------------------------------------------------------------------------------

def decide_contacts(ctx: DecisionContext, caller: str, bodies: Sequence[DecisionIn], *,
                    idempotency_key: str | None = None, now: datetime | None = None,
                    session: Session | None = None, rate_limit_per_s: int | None = None) -> list[dict[str, Any]]:
    """Decide for every contact, in order; returns the response bodies (DESIGN §7). Uses and
    commits ``session`` (the request's) if given, else a session of its own.

    Raises Conflict (409 ``idempotency_conflict``) when a request id was used before with
    another body, RateLimited (429) when ``rate_limit_per_s`` is given and exceeded, and
    DecisionStoreUnavailable (503) when the database cannot be written.
    """
    started = time.perf_counter()
    now = now or utcnow()
    contacts = []
    for index, body in enumerate(bodies):
        request_id = body.request_id or (f"{idempotency_key}#{index}" if idempotency_key and len(bodies) > 1
                                         else idempotency_key) or uuid.uuid4().hex
        contacts.append(_Contact(index, body, request_id, request_hash(body)))
    seen: set[str] = set()
    for c in contacts:
        if c.request_id in seen:
            raise Conflict(f"request id {c.request_id!r} appears twice in one call; each contact needs its own",
                           code="duplicate_request_id", details=[{"path": f"$.contacts[{c.index}].request_id",
                                                                  "message": "repeated"}])
        seen.add(c.request_id)

    version, redis_ok = _preflight(ctx, caller, len(bodies), rate_limit_per_s)
    replays: dict[str, tuple[str, dict[str, Any]]] = {}
    try:
        with (nullcontext(session) if session is not None else ctx.session_factory()) as session:
            # the snapshot loads with this session: a second connection per reload could
            # exhaust the pool when every thread holds one
            snapshot, experiments = ctx.cache.current(lambda: nullcontext(session), version, now)
            # a retry must not be decided (or charged) again: answer it with the stored decision
            replays = _read_contacts(session, caller, contacts, experiments)
            _check_replays(contacts, replays)
            fresh = [c for c in contacts if c.request_id not in replays]
            if fresh:
                states = _ledger_states(ctx, snapshot, fresh, now, redis_ok)
                for c, state in zip(fresh, states):
                    c.result = decide(snapshot, DecisionRequest(c.body.subscriber_id, c.body.channel, c.profile,
                                                                c.body.context), state, now)
                    c.response = {"decision_id": uuid.uuid4().hex, **c.result.as_json(),
                                  "created_at": now.isoformat(), "replayed": False}
                if session.get_bind().dialect.name == "sqlite":
                    # end the read transaction: SQLite cannot upgrade a reader whose snapshot
                    # another writer has moved past (SQLITE_BUSY_SNAPSHOT, no busy wait); the
                    # write transaction then starts with an INSERT and waits its turn
                    session.commit()
                _record_exposures(session, fresh, experiments, now)
                _reserve(ctx, snapshot, caller, fresh, now, started)
                try:
                    lost = _store(session, caller, fresh, snapshot, now)
                    session.commit()
                except Exception:
                    session.rollback()
                    _release(ctx, fresh)
                    raise
                if lost:  # a concurrent retry stored these first: answer with what it stored
                    losers = [c for c in fresh if c.request_id in lost]
                    again = _existing(session, caller, losers)
                    _release_unrecorded(ctx, session, caller, losers)
                    _check_replays(fresh, again)
                    replays.update(again)
    except OperationalError as exc:
        log.error("decision store unavailable: %s", exc)
        raise DecisionStoreUnavailable("the decision store (database) is unavailable; retry shortly") from None
    out = []
    for c in contacts:
        if c.request_id in replays:
            out.append({**replays[c.request_id][1], "replayed": True})
        else:
            assert c.response is not None
            out.append(c.response)
    return out


def _preflight(ctx: DecisionContext, caller: str, count: int,
               rate_limit_per_s: int | None) -> tuple[tuple[str, int] | None, bool]:
    """One Redis round trip before deciding: count these decisions against the caller's rate
    limit (a fixed one-second window; 429 when over) and read the config version. Returns
    (version, Redis usable). Without Redis the limit is not enforced: decisions degrade anyway."""
    if not ctx.redis_usable():
        return None, False
    try:
        pipe = ctx.redis_client.pipeline(transaction=False)
        if rate_limit_per_s is not None:
            window = f"cp:rate:{caller}:{int(time.time())}"
            pipe.incrby(window, count)
            pipe.expire(window, 2)
        pipe.mget(CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY)
        replies = pipe.execute()
        version = parse_version(ctx.redis_client, replies[-1])
    except (redis.RedisError, OSError):
        ctx.redis_failed()
        return None, False
    if rate_limit_per_s is not None and replies[0] > rate_limit_per_s:
        raise RateLimited(f"more than {rate_limit_per_s} decisions per second for this key; retry after a second",
                          details={"limit_per_s": rate_limit_per_s, "retry_after_s": 1})
    return version, True


def _check_replays(contacts: list[_Contact], replays: dict[str, tuple[str, dict[str, Any]]]) -> None:
    clashes = [c for c in contacts if c.request_id in replays and replays[c.request_id][0] != c.request_hash]
    if clashes:
        raise Conflict("a request id was used before with another body; send the same body to get the stored "
                       "decision, or use a new request id", code="idempotency_conflict",
                       details=[{"path": f"$.contacts[{c.index}]" if len(contacts) > 1 else "$",
                                 "message": f"request id {c.request_id!r} was used with another body"}
                                for c in clashes])


def _release_unrecorded(ctx: DecisionContext, session: Session, caller: str, losers: list[_Contact]) -> None:
    """A request that lost the insert to a concurrent retry of itself keeps no charge the
    stored decision does not record: if the winner charged, it replayed this very
    reservation (same request key) and nothing is released; if it did not, the charge made
    here is refunded."""
    charging = [c for c in losers if c.reserved_key]
    if not charging:
        return
    recorded = set(session.scalars(
        select(Decision.request_id).join(BudgetCharge, BudgetCharge.decision_id == Decision.id)
        .where(Decision.caller == caller, Decision.request_id.in_([c.request_id for c in charging]))))
    _release(ctx, [c for c in charging if c.request_id not in recorded])


def _release(ctx: DecisionContext, contacts: list[_Contact]) -> None:
    for c in contacts:
        if c.reserved_key:
            try:
                ctx.ledger.release(c.reserved_key)
            except LedgerUnavailable:  # the reconcile job rebuilds counters from the ledger of record
                log.warning("could not release reservation %s", c.reserved_key)


def get_decision(session: Session, decision_id: str) -> Decision | None:
    return session.get(Decision, decision_id)


def decision_json(decision: Decision) -> dict[str, Any]:
    """A stored decision with its explanation, as it was answered."""
    return {**decision.response, "replayed": False, "request_id": decision.request_id,
            "snapshot_version": decision.snapshot_version}
