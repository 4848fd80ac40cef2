"""The live budget ledger and contact-cap counters in Redis (DESIGN §4 step 7).

What lives where:

- ``cp:ledger:budget:<code>:<period key>`` — a string counter: money reserved against one
  budget in one period, in **integer minor units** (cents). Changed only with ``INCRBY`` /
  ``DECRBY`` so no float ever touches the balance: 0.1 + 0.2 is 30, not 0.30000000000000004.
- ``cp:ledger:contacts:<subscriber>:<channel>`` — a sorted set of request keys scored by the
  contact time in epoch milliseconds; the contacts in a window are one ``ZCOUNT``. Members older
  than the channel's window (and the ledger's retention) are trimmed lazily by the reserve
  script, and the key expires when nobody has been contacted for that long.
- ``cp:ledger:request:<request key>`` — the request marker: the JSON of what one successful
  reservation charged, kept for ``marker_ttl_s`` (default 7 days). It makes retries idempotent
  and tells :meth:`BudgetLedger.release` exactly what to refund.
- ``cp:ledger:rebuilt_at`` (``LEDGER_READY_KEY``) — the ready mark: present while the counters
  hold everything the ledger of record does. A Redis that lost its data lost the mark too, and
  its counters would start from zero, so **no paid reservation succeeds without the mark**: the
  reconcile job (``decisioning.jobs``) rebuilds the counters and sets it.
  ``cp:ledger:rebuilding`` holds the token of the rebuild under way (a lease).

Why one Lua script: the check ("is there room?") and the charge must be one step, or two
web processes that both read 999.00 of a 1,000.00 cap would both spend 1.00 more. Redis runs a
script atomically, so the replay check, the contact cap, every budget's cap and pace and all the
increments happen with no other command in between — across any number of web processes and
hosts. Every key a call touches is computed up front and passed as ``KEYS``. The scripts live
in ``decisioning/lua/`` (``reserve.lua``, ``release.lua``, ``state.lua``), each with the layout
of its ``KEYS`` and ``ARGV``; they are read when this module loads.

Why idempotent: a channel (or our own HTTP client) may retry a request whose answer was lost.
The marker, keyed by the request key, turns the retry into a replay: the stored result comes
back with ``replayed=True`` and nothing is charged twice. A *failed* reservation stores no
marker on purpose: nothing was charged, so there is nothing to replay, and a retry later (after
a release, a new period or a raised cap) may legitimately succeed. After the marker's TTL the
decision row (UNIQUE request id) is what stops a duplicate; the marker only has to cover the
retry window.

Failure: every Redis error surfaces as :class:`LedgerUnavailable`, so the service can answer
``degraded: true`` and fail closed for paid actions (never overspend). A Redis restart empties
the script cache; redis-py's ``Script`` object answers the resulting NOSCRIPT by loading the
script again and retrying once, and the reconcile job calls :meth:`BudgetLedger.rebuild` with
the sums from the decisions table (the ledger of record).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from importlib import resources
from typing import Any, NamedTuple

import orjson
import redis

from decisioning.snapshot import BudgetRule, ContactRule
from offers.instants import as_utc

__all__ = [
    "LEDGER_READY_KEY",
    "NOT_READY",
    "RESERVATIONS_PER_CALL",
    "RESERVATION_TO_ROW_S",
    "BudgetLedger",
    "BudgetLimit",
    "Charge",
    "ContactLimit",
    "LedgerReading",
    "LedgerUnavailable",
    "Release",
    "Reservation",
    "budget_key",
    "contacts_key",
    "from_cents",
    "limit_to_cents",
    "period_key_for",
    "request_key_marker",
    "to_cents",
]

log = logging.getLogger("carepilot.ledger")
KEY_PREFIX = "cp:ledger:"
DEFAULT_MARKER_TTL_S = 7 * 24 * 3600
# Contacts are kept at least this long even when every window is shorter, so lengthening a
# channel's window (say 7 → 30 days) does not forget contacts that still count.
DEFAULT_CONTACT_RETENTION_S = 90 * 24 * 3600

_CENT = Decimal("0.01")
_MICRO = Decimal("0.000001")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_RELEASE_ATTEMPTS = 5
# Reservations per script call: Redis runs a call whole, so a call of a bulk chunk's 2,000
# would hold every other client for several milliseconds; 200 hold it for under one.
RESERVATIONS_PER_CALL = 200
_MARKER_VERSION = 1

# Outcome codes; the same words as the decision core's reason codes.
OK = "ok"
CONTACT_CAP = "contact_cap"
BUDGET_EXHAUSTED = "budget_exhausted"
PACING = "pacing"
NOT_READY = "ledger_not_ready"  # the counters are not rebuilt (see LEDGER_READY_KEY): no paid reservation

LEDGER_READY_KEY = f"{KEY_PREFIX}rebuilt_at"
# Longer than any decision takes from its reservation to its row, or to the release that
# follows a failed write: milliseconds normally (a bulk call's chunk waits behind at most one
# other chunk's write), and at worst the database's bound on a statement: SQLite's busy
# timeout (30 s, infra.db), PostgreSQL's statement timeout on the store's connections (20 s,
# decisioning.store_pg). The reconcile waits this long before summing, and a retry treats an
# earlier attempt's reservation this old as abandoned.
RESERVATION_TO_ROW_S = 45.0
LEDGER_REBUILDING_KEY = f"{KEY_PREFIX}rebuilding"


class LedgerUnavailable(Exception):
    """Redis could not be reached or refused the command: spend is unknown, so paid actions
    must fail closed (``degraded: true``). The Redis error is chained as ``__cause__``."""


# --- money -----------------------------------------------------------------------------------------


def _decimal(amount: Decimal | int | float | str, what: str) -> Decimal:
    if isinstance(amount, bool):
        raise ValueError(f"{what} must be a number, got {amount!r}")
    try:
        # str(float) is the shortest repr that round-trips, so 0.285 stays 0.285 rather than
        # Decimal(0.285) = 0.28499999999999997557…, which would round the wrong way.
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what} must be a number, got {amount!r}") from None
    if not value.is_finite():
        raise ValueError(f"{what} must be finite, got {amount!r}")
    return value


def to_cents(amount: Decimal | int | float | str) -> int:
    """Money → integer minor units, rounding half up (0.005 → 1, 2.675 → 268). Used for costs and
    the ledger-of-record sums, which are whole cents already."""
    return int(_decimal(amount, "amount").quantize(_CENT, rounding=ROUND_HALF_UP) * 100)


def limit_to_cents(amount: Decimal | int | float | str) -> int:
    """A spending limit (cap or paced allowance) → cents, rounded *down*: a share-of-revenue cap
    of 1234.565 allows 1234.56, never half a cent more. Float noise is removed first (rounded
    to micro-units), so an allowance computed as 299.99999999997 is still 300.00."""
    value = _decimal(amount, "limit").quantize(_MICRO, rounding=ROUND_HALF_UP)
    return int(value.quantize(_CENT, rounding=ROUND_FLOOR) * 100)


def from_cents(cents: int) -> Decimal:
    """Integer minor units → money, exact (12345 → Decimal('123.45'))."""
    return (Decimal(int(cents)) / 100).quantize(_CENT)


# --- keys ------------------------------------------------------------------------------------------


def _part(text: str) -> str:
    # ":" separates key parts; escape it (and the escape character) so "a:b"+"c" ≠ "a"+"b:c"
    return str(text).replace("%", "%25").replace(":", "%3A")


def budget_key(code: str, period_key: str) -> str:
    return f"{KEY_PREFIX}budget:{_part(code)}:{_part(period_key)}"


def contacts_key(subscriber_id: str, channel: str) -> str:
    return f"{KEY_PREFIX}contacts:{_part(subscriber_id)}:{_part(channel)}"


def request_key_marker(request_key: str) -> str:
    return f"{KEY_PREFIX}request:{_part(request_key)}"


def period_key_for(rule: BudgetRule) -> str:
    """The period a budget rule spends in, as the decisions table writes it: "2026-11" for a
    calendar month, "2026-Q4" for a quarter, "2026" for a year, the start date for any other
    period, and "all" for a budget without period bounds."""
    start, end = rule.period_start, rule.period_end
    if start is None or end is None:
        return "all"
    if start.day == 1 and end.day == 1 and start.time() == end.time() == datetime.min.time():
        months = (end.year - start.year) * 12 + end.month - start.month
        if months == 1:
            return f"{start:%Y-%m}"
        if months == 3 and start.month % 3 == 1:
            return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
        if months == 12 and start.month == 1:
            return f"{start.year}"
    return f"{start:%Y-%m-%d}"


def _epoch_ms(now: datetime) -> int:
    return (as_utc(now) - _EPOCH) // _ONE_MS  # integer arithmetic: no float rounding of the timestamp


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- inputs and results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetLimit:
    """One budget a reservation must fit: its cap for the period and how much may have been
    spent by now (pacing), both in cents. ``allowed_now_cents`` None: no pacing, the cap only."""

    code: str
    period_key: str
    cap_cents: int
    allowed_now_cents: int | None = None

    def __post_init__(self) -> None:
        if not self.code or not self.period_key:
            raise ValueError("a budget limit needs a code and a period key")
        for name in ("cap_cents", "allowed_now_cents"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"budget {self.code}: {name} must be a whole number of cents >= 0, got {value!r}")

    @property
    def effective_allowed_cents(self) -> int:
        """The pace limit, never above the cap."""
        allowed = self.allowed_now_cents
        return self.cap_cents if allowed is None else min(allowed, self.cap_cents)

    @classmethod
    def from_amounts(
        cls,
        code: str,
        period_key: str,
        cap: Decimal | float | int | str,
        allowed_now: Decimal | float | int | str | None = None,
    ) -> BudgetLimit:
        """From money amounts (rounded down to the cent: see :func:`limit_to_cents`)."""
        return cls(code, period_key, limit_to_cents(cap), None if allowed_now is None else limit_to_cents(allowed_now))

    @classmethod
    def from_rule(cls, rule: BudgetRule, now: datetime) -> BudgetLimit:
        """The limit the decision core applied: the rule's cap and its paced allowance at ``now``
        (``cap × elapsed share of the period × (1 + slack)``), for the rule's period."""
        return cls.from_amounts(rule.code, period_key_for(rule), rule.cap_amount, rule.paced_allowance(as_utc(now)))


@dataclass(frozen=True)
class ContactLimit:
    """The contact cap of one channel for one subscriber: at most ``max_contacts`` within the
    last ``window_s`` seconds. A reservation with a contact limit records the contact."""

    subscriber_id: str
    channel: str
    max_contacts: int
    window_s: int

    def __post_init__(self) -> None:
        if not self.subscriber_id or not self.channel:
            raise ValueError("a contact limit needs a subscriber id and a channel")
        if type(self.max_contacts) is not int or self.max_contacts < 0:
            raise ValueError(f"max_contacts must be an int >= 0, got {self.max_contacts!r}")
        if type(self.window_s) is not int or self.window_s <= 0:
            raise ValueError(f"window_s must be an int > 0, got {self.window_s!r}")

    @classmethod
    def from_rule(cls, rule: ContactRule, subscriber_id: str) -> ContactLimit:
        return cls(subscriber_id, rule.channel, rule.max_contacts, rule.window_days * 86400)


class Charge(NamedTuple):
    """Money charged to one budget in one period."""

    code: str
    period_key: str
    cents: int

    @property
    def amount(self) -> Decimal:
        return from_cents(self.cents)


@dataclass(frozen=True)
class Reservation:
    """The answer of :meth:`BudgetLedger.reserve`.

    ``ok``: everything was charged (or, with ``replayed``, had been by an earlier call with the
    same request key). Otherwise ``reason`` is ``contact_cap``, ``budget_exhausted``,
    ``pacing`` or ``ledger_not_ready`` (a paid reservation while the counters are not rebuilt)
    and nothing was charged; for a budget reason ``budget_code``, ``spent_cents``
    and ``limit_cents`` (its cap, or its allowance by now) say which budget and why, and for
    the contact cap ``contacts_in_window`` and ``limit`` (max contacts) do.
    """

    request_key: str
    ok: bool
    reason: str | None
    cost_cents: int
    charged: tuple[Charge, ...] = ()
    contact_recorded: bool = False
    replayed: bool = False
    budget_code: str | None = None
    spent_cents: int | None = None
    limit_cents: int | None = None
    contacts_in_window: int | None = None
    max_contacts: int | None = None
    reserved_at_ms: int | None = None  # a replay: when the earlier call reserved (wall clock, epoch ms)
    attempt: str | None = None  # the call that holds the marker now
    adopted: bool = False  # a replay this call took over: it charged what this call asked

    @property
    def cost(self) -> Decimal:
        return from_cents(self.cost_cents)


@dataclass(frozen=True)
class Release:
    """The answer of :meth:`BudgetLedger.release`: whether a reservation was undone, and what."""

    released: bool
    refunded: tuple[Charge, ...] = ()
    contact_removed: bool = False


class ReserveRequest(NamedTuple):
    """One reservation of :meth:`BudgetLedger.reserve_many`."""

    request_key: str
    cost: Decimal | float | int | str
    budgets: tuple[BudgetLimit, ...]
    contact: ContactLimit | None


class LedgerReading(NamedTuple):
    """What the decision core needs from Redis (``DecisionState``'s two mappings): contacts per
    channel in that channel's window, and money spent per budget code (as float, as the core
    takes it; the exact value is ``spent_total``)."""

    contacts_in_window: dict[str, int]
    spent_by_budget: dict[str, float]


StateRequest = tuple[str, Mapping[str, int], Iterable[tuple[str, str]]]
"""One subscriber's reads: (subscriber id, {channel: window seconds}, [(budget code, period key)])."""


@dataclass(frozen=True)
class StateReads:
    """The reads of :meth:`BudgetLedger.read_states` as one call of the state script: its keys
    (contact sets, then budget counters) and arguments (window bounds), and how to turn its
    reply into readings."""

    requests: Sequence[StateRequest]
    plans: list[list[tuple[str, str]]]
    budget_slots: dict[tuple[str, str], int]
    keys: list[str]
    args: list[Any]

    def readings(self, reply: Sequence[Any]) -> list[LedgerReading]:
        """The readings, in request order, from the script's reply."""
        contact_count = self.args[0]
        spend = [(int(_text(raw)) if raw is not None else 0) / 100 for raw in reply[contact_count:]]
        readings, at = [], 0
        for (_, windows, _), periods in zip(self.requests, self.plans):
            counts = reply[at : at + len(windows)]
            at += len(windows)
            contacts = {channel: int(count) for channel, count in zip(windows, counts)}
            readings.append(
                LedgerReading(contacts, {code: spend[self.budget_slots[(code, period)]] for code, period in periods})
            )
        return readings


# --- the scripts --------------------------------------------------------------------------------


def _lua_source(name: str) -> str:
    """The text of ``decisioning/lua/<name>``: each script lives in a file of its own, with the
    layout of its KEYS and ARGV documented beside the code."""
    return (resources.files("decisioning") / "lua" / name).read_text(encoding="utf-8")


# Read once, when the module loads: a missing script fails at start-up, not on the first decision.
_STATE_LUA = _lua_source("state.lua")
_RESERVE_LUA = _lua_source("reserve.lua")
_RELEASE_LUA = _lua_source("release.lua")


# --- the ledger ------------------------------------------------------------------------------------


class BudgetLedger:
    """Budget counters, contact windows and idempotent reservations over one Redis client.

    Thread-safe as the client is (redis-py pools connections); create one per process.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        marker_ttl_s: int = DEFAULT_MARKER_TTL_S,
        contact_retention_s: int = DEFAULT_CONTACT_RETENTION_S,
    ) -> None:
        if marker_ttl_s <= 0 or contact_retention_s <= 0:
            raise ValueError("marker_ttl_s and contact_retention_s must be positive")
        self._redis = redis_client
        self.marker_ttl_s = marker_ttl_s
        self.contact_retention_s = contact_retention_s
        # register_script only hashes the text; EVALSHA is tried first and the script loaded on
        # NOSCRIPT (a fresh or restarted server), so the source is not resent on every call.
        self._reserve_script = redis_client.register_script(_RESERVE_LUA)
        self._release_script = redis_client.register_script(_RELEASE_LUA)
        self._state_script = redis_client.register_script(_STATE_LUA)

    # -- reads --

    def read_state(
        self,
        subscriber_id: str,
        channels_with_windows: Mapping[str, int],
        budget_periods: Iterable[tuple[str, str]],
        now: datetime,
    ) -> LedgerReading:
        """Contacts per channel within its window (seconds) and spend per budget code in the
        given period, in one round trip (one script call).

        Advisory: the decision core uses it to pick an action; :meth:`reserve` re-checks
        atomically, so a change in between can only turn a pick into a refusal, never an
        overspend.
        """
        return self.read_states([(subscriber_id, channels_with_windows, budget_periods)], now)[0]

    def read_states(self, requests: Sequence[StateRequest], now: datetime) -> list[LedgerReading]:
        """:meth:`read_state` for many subscribers, in one round trip (one script call for a
        bulk decision call); each budget counter is read once however many contacts share it."""
        reads = self.plan_state_reads(requests, now)
        try:
            [reply] = self._evalsha_many(self._state_script, [(reads.keys, reads.args)])
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc
        return reads.readings(reply)

    def queue_state_reads(self, pipe: Any, requests: Sequence[StateRequest], now: datetime) -> StateReads:
        """Add the reads of :meth:`read_states` to a caller's pipeline, as one script call, so
        they share its round trip. Its reply is :meth:`StateReads.readings`' input; a
        ``NoScriptError`` reply (a restarted server) means: call :meth:`read_states`."""
        reads = self.plan_state_reads(requests, now)
        pipe.evalsha(self._state_script.sha, len(reads.keys), *reads.keys, *reads.args)
        return reads

    @staticmethod
    def plan_state_reads(requests: Sequence[StateRequest], now: datetime) -> StateReads:
        """The keys and arguments of the state script for these reads (each budget counter
        once, however many requests share it)."""
        now_ms = _epoch_ms(now)
        contact_keys, bounds = [], []
        plans = []
        budget_slots: dict[tuple[str, str], int] = {}
        for subscriber_id, channels_with_windows, _ in requests:
            for channel, window_s in channels_with_windows.items():
                contact_keys.append(contacts_key(subscriber_id, channel))
                bounds.append(f"({now_ms - int(window_s) * 1000}")
        for _, _, budget_periods in requests:
            periods = list(budget_periods)
            codes = [code for code, _ in periods]
            if len(set(codes)) != len(codes):
                raise ValueError(f"one period per budget code, got {periods!r}")
            for pair in periods:
                if pair not in budget_slots:
                    budget_slots[pair] = len(budget_slots)
            plans.append(periods)
        keys = [*contact_keys, *(budget_key(code, period_key) for code, period_key in budget_slots)]
        return StateReads(requests, plans, budget_slots, keys, [len(contact_keys), *bounds])

    def spent_total(self, code: str, period_key: str) -> Decimal:
        """Money reserved against a budget in a period, exact."""
        try:
            raw = self._redis.get(budget_key(code, period_key))
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc
        return from_cents(int(_text(raw)) if raw is not None else 0)

    # -- reservations --

    def reserve(
        self,
        request_key: str,
        *,
        cost: Decimal | float | int | str,
        budgets: Sequence[BudgetLimit],
        contact: ContactLimit | None,
        now: datetime,
    ) -> Reservation:
        """Check and charge in one atomic step: the contact cap, then every budget's cap and
        pacing; only if all pass, add ``cost`` to every budget, record the contact and store
        the request marker. All or nothing: a refusal charges nothing and stores nothing.

        The same ``request_key`` again (within the marker TTL) returns the first successful
        result with ``replayed=True`` and charges nothing, whatever the other arguments say;
        compare ``cost_cents``/``charged`` if a mismatch matters. A replay of the same charge
        hands the marker to the replaying call (``Reservation.attempt``): the first call can no
        longer release it. Free actions (cost 0) skip
        the budgets but still count against the contact cap.
        """
        return self.reserve_many([ReserveRequest(request_key, cost, tuple(budgets), contact)], now)[0]

    def reserve_many(self, requests: Sequence[ReserveRequest], now: datetime) -> list[Reservation]:
        """:meth:`reserve` for many requests in one round trip (script calls of up to
        ``RESERVATIONS_PER_CALL`` reservations each, pipelined): each one is still atomic on
        its own and they run in order, so two contacts of one batch competing for a budget are
        decided exactly as two separate calls would be."""
        attempt = uuid.uuid4().hex  # in every marker this call stores: what _undo may release
        wall_ms = int(time.time() * 1000)
        calls = [self._reserve_call(request, now, attempt, wall_ms) for request in requests]
        script_calls = []
        for start in range(0, len(calls), RESERVATIONS_PER_CALL):
            batch = calls[start : start + RESERVATIONS_PER_CALL]
            keys: list[str] = [LEDGER_READY_KEY]
            args: list[Any] = [len(batch), attempt]
            for call_keys, call_args, _, _ in batch:
                keys += call_keys
                args += [len(call_keys), len(call_args), *call_args]
            script_calls.append((keys, args))
        try:
            replies = [reply for batch in self._evalsha_many(self._reserve_script, script_calls) for reply in batch]
        except redis.RedisError as exc:
            # the scripts may have run and only their answer been lost (a timeout, one failed
            # call of the pipeline): the caller will answer without these reservations, so undo
            # whichever went through
            self._undo(requests, calls)
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc
        return [
            self._reservation(request, reply, cost_cents, charged, attempt)
            for request, reply, (_, _, cost_cents, charged) in zip(requests, replies, calls)
        ]

    def _evalsha_many(self, script: Any, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run ``script`` once per (keys, args) in one pipelined round trip. EVALSHA is sent
        directly (redis-py's pipelined ``Script`` would first ask ``SCRIPT EXISTS``: a second
        round trip on every call); calls answered NOSCRIPT (a fresh or restarted server) did
        not run, so they are sent again once the script is loaded."""
        pending = list(range(len(calls)))
        replies: list[Any] = [None] * len(calls)
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for i in pending:
                keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            answers = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(pending, answers):
                if isinstance(answer, redis.exceptions.NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    replies[i] = answer
            if not missing:
                break
            self._redis.script_load(script.script)
            pending = missing
        return replies

    def _undo(
        self,
        requests: Sequence[ReserveRequest],
        calls: Sequence[tuple[list[str], list[Any], int, tuple[Charge, ...]]],
    ) -> None:
        """Best effort, one round trip: release every reservation of ``calls`` whose marker is
        exactly the one that call would have stored (so this call made it: an earlier
        attempt's marker, a replay, is left alone). If Redis cannot take even that, the
        counters stay above the ledger of record: money held back, never overspent."""
        undo_calls = []
        for request, (keys, args, _, charged) in zip(requests, calls):
            # the release keys: the marker, the counters charged (all of the reservation's
            # budgets, or none for a free one), then its contact window if any
            charged_keys = keys[1 : 1 + len(request.budgets)] if charged else []
            release_keys = [keys[0], *charged_keys, *(keys[-1:] if request.contact else [])]
            member = request.request_key if request.contact else ""
            undo_calls.append((release_keys, [args[0], len(charged), member, *(c.cents for c in charged)]))
        try:
            self._evalsha_many(self._release_script, undo_calls)
        except redis.RedisError as exc:
            log.warning("could not undo %d reservation(s) after a failed reserve: %s", len(undo_calls), exc)

    def _reserve_call(
        self, request: ReserveRequest, now: datetime, attempt: str, wall_ms: int
    ) -> tuple[list[str], list[Any], int, tuple[Charge, ...]]:
        request_key, budgets, contact = request.request_key, request.budgets, request.contact
        if not request_key:
            raise ValueError("request_key must be a non-empty string")
        cost_cents = to_cents(request.cost)
        if cost_cents < 0:
            raise ValueError(f"cost must be >= 0, got {request.cost!r}")
        pairs = [(b.code, b.period_key) for b in budgets]
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"each budget period may be charged once per reservation, got {pairs!r}")
        now_ms = _epoch_ms(now)
        charged = tuple(Charge(b.code, b.period_key, cost_cents) for b in budgets) if cost_cents else ()
        marker = orjson.dumps(
            {
                # at_ms: when this call reserved, by the wall clock (a bulk call's ``now`` is when it
                # started, which may be minutes earlier): what tells a dead attempt from a slow one
                "v": _MARKER_VERSION,
                "cost_cents": cost_cents,
                "at_ms": wall_ms,
                "attempt": attempt,
                "budgets": [[c.code, c.period_key, c.cents] for c in charged],
                "contact": [contact.subscriber_id, contact.channel] if contact else None,
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()

        keys = [request_key_marker(request_key), *(budget_key(code, period) for code, period in pairs)]
        args: list[Any] = [marker, self.marker_ttl_s * 1000, cost_cents, len(budgets)]
        if contact is not None:
            keys.append(contacts_key(contact.subscriber_id, contact.channel))
            horizon_ms = max(contact.window_s, self.contact_retention_s) * 1000
            args += [
                1,
                request_key,
                now_ms,
                contact.max_contacts,
                f"({now_ms - contact.window_s * 1000}",
                f"({now_ms - horizon_ms}",
                horizon_ms,
            ]
        else:
            args += [0, "", 0, 0, "+inf", "-inf", 1]
        for budget in budgets:
            args += [budget.cap_cents, budget.effective_allowed_cents]
        return keys, args, cost_cents, charged

    @staticmethod
    def _reservation(
        request: ReserveRequest, reply: Any, cost_cents: int, charged: tuple[Charge, ...], attempt: str
    ) -> Reservation:
        request_key = request.request_key
        outcome = _text(reply[0])
        if outcome == OK:
            return Reservation(
                request_key, True, None, cost_cents, charged, request.contact is not None, attempt=attempt
            )
        if outcome == "replay":
            return _replayed(request_key, _text(reply[1]), adopted_by=attempt if int(reply[2]) else None)
        if outcome == "not_ready":
            return Reservation(request_key, False, NOT_READY, cost_cents)
        if outcome == CONTACT_CAP:
            return Reservation(
                request_key,
                False,
                CONTACT_CAP,
                cost_cents,
                contacts_in_window=int(reply[2]),
                max_contacts=int(reply[3]),
            )
        budget = request.budgets[int(reply[1]) - 1]  # Lua indexes from 1
        return Reservation(
            request_key,
            False,
            outcome,
            cost_cents,
            budget_code=budget.code,
            spent_cents=int(reply[2]),
            limit_cents=int(reply[3]),
        )

    def release(self, request_key: str, attempt: str | None = None) -> Release:
        """Undo a successful reservation: refund what its marker says was charged, forget the
        contact and delete the marker, atomically. For when the decision row cannot be written
        after the reservation. Idempotent: with no marker (already released, never reserved,
        refused, or expired) nothing happens and ``released`` is False.

        With ``attempt`` (``Reservation.attempt``), only while that call still holds the marker:
        a retry that replayed it since holds it now, and its row may record the charge.

        Two steps so every key is known before the script runs: read the marker, then a script
        that refunds only if the marker is still exactly that one (compare-and-delete); if it
        changed in between (released and reserved again), read it again.
        """
        marker_key = request_key_marker(request_key)
        try:
            for _ in range(_RELEASE_ATTEMPTS):
                raw = self._redis.get(marker_key)
                if raw is None:
                    return Release(False)
                stored = _text(raw)
                record = json.loads(stored)
                if attempt is not None and record.get("attempt") != attempt:
                    return Release(False)
                refunds = tuple(Charge(code, period, int(cents)) for code, period, cents in record["budgets"])
                keys = [marker_key, *(budget_key(c.code, c.period_key) for c in refunds)]
                contact = record.get("contact")
                if contact:
                    keys.append(contacts_key(contact[0], contact[1]))
                args: list[str | int] = [
                    stored,
                    len(refunds),
                    request_key if contact else "",
                    *(c.cents for c in refunds),
                ]
                done = int(self._release_script(keys=keys, args=args))
                if done == 1:
                    return Release(True, refunds, bool(contact))
                if done == 0:
                    return Release(False)
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc
        raise LedgerUnavailable(f"request marker {request_key!r} kept changing during release")

    # -- reconcile --

    def is_ready(self) -> bool:
        """Whether the counters hold the ledger of record (the ready mark is there)."""
        try:
            return bool(self._redis.exists(LEDGER_READY_KEY))
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc

    def rebuilding(self) -> bool:
        """Whether a rebuild holds its lease now."""
        try:
            return bool(self._redis.exists(LEDGER_REBUILDING_KEY))
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc

    def begin_rebuild(self, lease_s: float) -> str:
        """Take the ready mark away (paid reservations are refused from now on) and take the
        rebuild lease for ``lease_s`` seconds; returns the lease's token for :meth:`rebuild`.
        A later ``begin_rebuild`` supersedes this one; a rebuild that dies leaves the mark
        away until the lease expires and the next reconcile runs."""
        token = uuid.uuid4().hex
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(LEDGER_READY_KEY)
                pipe.set(LEDGER_REBUILDING_KEY, token, px=max(1, int(lease_s * 1000)))
                pipe.execute()
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc
        return token

    def forget_requests(self) -> int:
        """Delete every request marker; returns how many. For a rebuild, after the wait for rows
        in flight: a marker whose request stored no row holds a charge the rebuilt counters will
        not, so a retry must not replay it (it reserves again); a request with a row is answered
        from the row. Paid reservations and replays are refused meanwhile (no ready mark)."""
        forgotten = 0
        try:
            batch: list[Any] = []
            for key in self._redis.scan_iter(match=f"{KEY_PREFIX}request:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    forgotten += int(self._redis.unlink(*batch))
                    batch = []
            if batch:
                forgotten += int(self._redis.unlink(*batch))
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc
        return forgotten

    def rebuild(
        self,
        spent: Mapping[tuple[str, str], Decimal | float | int | str],
        contacts: Mapping[tuple[str, str], Iterable[tuple[str, int]]],
        *,
        token: str | None = None,
        mark: str = "",
    ) -> bool:
        """Reset the counters from the ledger of record (the decisions table) after a Redis
        restart or a drift: SET every given budget counter to its sum (in money), and add the
        given contacts ``(member, timestamp ms)`` to their windows — added, not replaced, so
        contacts recorded since the restart are kept (the request key as member makes a
        contact already present count once).

        With the ``token`` of :meth:`begin_rebuild`: the counters are set, the ready mark
        (value ``mark``) set and the lease given back in one MULTI/EXEC, only if the lease is
        still this token; returns False (and sets no counter) when another rebuild took it.
        The sums must then have been read after ``begin_rebuild`` and after every reservation
        made before it was written (``decisioning.jobs`` waits for them), so no reservation is
        lost: none was charged in between. Without a token the counters are set as given.
        """
        counters = {}
        for (code, period_key), amount in spent.items():
            cents = to_cents(amount)
            if cents < 0:
                raise ValueError(f"budget {code} {period_key}: spend must be >= 0, got {amount!r}")
            counters[budget_key(code, period_key)] = cents
        windows = {
            contacts_key(subscriber_id, channel): {str(member): int(ts_ms) for member, ts_ms in members}
            for (subscriber_id, channel), members in contacts.items()
        }
        retention_ms = self.contact_retention_s * 1000
        wall_ms = int(time.time() * 1000)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                for key, scores in windows.items():
                    if not scores:
                        continue
                    pipe.zadd(key, scores)
                    # an idle subscriber's key disappears a retention after its newest contact,
                    # but never sooner than a reservation made now would keep it (Redis 6.2,
                    # the embedded server, has no PEXPIREAT ... GT)
                    pipe.pexpireat(key, max(max(scores.values()), wall_ms) + retention_ms)
                if token is None:
                    for key, cents in counters.items():
                        pipe.set(key, cents)
                pipe.execute()
            if token is None:
                return True
            # counters the ledger of record has no charge for (a period whose every charge was
            # released, or orphans) go back to zero with the rest
            stale = [
                key
                for key in self._redis.scan_iter(match=f"{KEY_PREFIX}budget:*", count=1000)
                if _text(key) not in counters
            ]
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.watch(LEDGER_REBUILDING_KEY)
                if _text(pipe.get(LEDGER_REBUILDING_KEY) or b"") != token:
                    return False
                pipe.multi()
                if stale:
                    pipe.delete(*stale)
                for key, cents in counters.items():
                    pipe.set(key, cents)
                pipe.set(LEDGER_READY_KEY, mark or "rebuilt")
                pipe.delete(LEDGER_REBUILDING_KEY)
                pipe.execute()
            return True
        except redis.WatchError:
            return False
        except redis.RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {exc}") from exc


def _replayed(request_key: str, stored: str, adopted_by: str | None = None) -> Reservation:
    """A replay of the stored marker; ``adopted_by``: the replaying call's attempt, when it took
    the marker over (it charges the same), else the marker stays with the call that made it."""
    record = json.loads(stored)
    charged = tuple(Charge(code, period, int(cents)) for code, period, cents in record["budgets"])
    return Reservation(
        request_key,
        True,
        None,
        int(record["cost_cents"]),
        charged,
        record.get("contact") is not None,
        replayed=True,
        reserved_at_ms=record.get("at_ms"),
        attempt=adopted_by or record.get("attempt"),
        adopted=adopted_by is not None,
    )
