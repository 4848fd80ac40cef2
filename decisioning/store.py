"""Where the decision service reads profiles and writes decisions: the decision store.

Two stores answer the same four questions, so the service has one code path:

* :class:`SqlStore` — SQLAlchemy, any backend (the embedded SQLite default, and the tests'
  reference);
* :class:`decisioning.store_pg.PostgresStore` — PostgreSQL on the hot path: one statement to
  read and one to write, each its own transaction (autocommit), so a decision costs two
  database round trips instead of six or seven.

Both keep the same guarantees: exposures are inserted if absent (the first one wins), the
decision row and its budget charges land together or not at all, and a request id another
request stored first is reported back as "lost", never stored twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import BigInteger, Boolean, Select, String, cast, literal, null, select, tuple_, union_all
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from decisioning.core import DecisionResult
from decisioning.models import Decision
from decisioning.schemas import DecisionIn
from experiments.models import Exposure
from infra.config_version import read_generation
from infra.sql_dialect import dialect_insert, insert_ignoring_conflicts
from offers.models import BudgetCharge, Subscriber

IN_CHUNK = 1000  # ids per IN (...) list

RequestKey = tuple[str, str]
"""(caller, request id): what identifies a request, and its decision row."""

Replays = dict[RequestKey, tuple[str, dict[str, Any]]]
"""Stored decisions by request key: (request hash, the response as answered)."""

Experiments = dict[str, tuple[int, int]]
"""Running experiments: key → (database id, phase)."""


class StoreUnavailable(Exception):
    """The database could not be reached or failed the statement; nothing was written."""


@dataclass
class Contact:
    """One contact as it goes through the decision steps."""

    index: int  # its place in its request's body (error paths)
    caller: str  # "key:<api key id>" or "user:<id>"
    body: DecisionIn
    request_id: str
    request_hash: str
    profile: dict[str, Any] = field(default_factory=dict)
    sticky: dict[str, tuple[str | None, bool]] = field(default_factory=dict)  # experiment → (arm, holdout)
    assignment_ids: dict[str, int] = field(default_factory=dict)  # experiment → exposure id
    result: DecisionResult | None = None
    response: dict[str, Any] | None = None
    charges: tuple[tuple[str, str, Decimal], ...] = ()  # (budget code, period key, amount)
    reserved_key: str | None = None  # the ledger request key, when a reservation was charged
    reserved_attempt: str | None = None  # the reserving call's attempt id (see BudgetLedger.release)
    error: BaseException | None = None  # what this contact's request is answered with instead

    @property
    def key(self) -> RequestKey:
        return self.caller, self.request_id

    def new_exposure(self, experiments: Experiments) -> tuple[int, int] | None:
        """(experiment id, phase) when the core exposed this contact for the first time."""
        experiment = self.result.experiment if self.result is not None else None
        if experiment is None or experiment.key in self.sticky or experiment.key not in experiments:
            return None
        return experiments[experiment.key]


class DecisionStore(Protocol):
    """Where decisions are read and written: :meth:`connect` gives one connection for a call."""

    def connect(self) -> AbstractContextManager[StoreConnection]:
        """A connection for one decision call; raises StoreUnavailable for database failures
        inside it."""


class StoreConnection(Protocol):
    """What the decision service needs from the database."""

    writes_concurrently: bool
    """True: :meth:`write` may run on another thread while the caller goes on (a bulk call
    then decides the next chunk while the database stores this one)."""

    config_generation: int | None
    """The config generation (``infra.config_version``) as :meth:`read` last found it; None
    before a read, or if the database has none."""

    def read(self, contacts: list[Contact], experiments: Experiments) -> Replays:
        """Set each contact's profile and recorded arms and :attr:`config_generation`; return
        the decisions already stored for these requests (a retry is answered from them)."""

    def write(
        self, contacts: list[Contact], experiments: Experiments, snapshot_version: int, now: datetime
    ) -> set[RequestKey]:
        """Record new exposures, the decision rows and their budget charges in one transaction
        (insert-if-absent on caller + request id); return the requests another request stored
        first."""

    def stored(self, keys: list[RequestKey]) -> Replays:
        """The stored decisions of these requests."""

    def charged(self, keys: list[RequestKey]) -> set[RequestKey]:
        """Which of these requests have a stored decision that charged a budget."""


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def decision_row(contact: Contact, experiments: Experiments, snapshot_version: int, now: datetime) -> dict[str, Any]:
    """The decisions-table row of a decided contact (``assignment_id`` as known so far)."""
    body, result = contact.response, contact.result
    assert body is not None and result is not None
    experiment = result.experiment
    action = body["action"]
    return {
        "id": body["decision_id"],
        "caller": contact.caller,
        "request_id": contact.request_id,
        "request_hash": contact.request_hash,
        "subscriber_id": contact.body.subscriber_id,
        "channel": contact.body.channel,
        "tier": result.tier,
        "risk_level": result.risk_level,
        "experiment_key": experiment.key if experiment else None,
        "arm_key": experiment.arm_key if experiment else None,
        "in_holdout": bool(experiment and experiment.in_holdout),
        "assignment_id": contact.assignment_ids.get(experiment.key) if experiment else None,
        "offer_code": action["offer_code"] if action else None,
        "cost": Decimal(str(action["cost"])) if action else Decimal("0"),
        "probability": body["probability"],
        "degraded": body["degraded"],
        "snapshot_version": snapshot_version,
        "response": body,
        "created_at": now,
    }


def exposure_row(contact: Contact, experiment_id: int, phase: int, now: datetime) -> dict[str, Any]:
    """The assignments-table row of a contact's first exposure."""
    assert contact.result is not None and contact.result.experiment is not None
    experiment = contact.result.experiment
    return {
        "experiment_id": experiment_id,
        "subscriber_id": contact.body.subscriber_id,
        "arm_key": experiment.arm_key,
        "in_holdout": experiment.in_holdout,
        "phase": phase,
        "tier": contact.result.tier,
        "channel": contact.body.channel,
        "first_exposed_at": now,
    }


def charge_rows(contact: Contact) -> list[dict[str, Any]]:
    """The budget-charges rows of a decided contact: one per budget its reservation charged."""
    assert contact.response is not None
    decision_id = contact.response["decision_id"]
    return [
        {"decision_id": decision_id, "budget_code": code, "period_key": period, "amount": amount}
        for code, period, amount in contact.charges
    ]


class ReadRows:
    """What a read found, filed from the rows of its statement, each
    ``(kind, key, text, id, experiment_id, flag, json, owner)``:

    - ``d``: a stored decision of one of the requests (owner: the caller, key: the request id,
      text: the request hash, json: the answer);
    - ``p``: a profile (key: the subscriber id, json: the attributes);
    - ``a``: an arm recorded in a running experiment (key: the subscriber id, text: the arm,
      id: the exposure id, flag: in holdout);
    - ``g``: the config generation (id).

    ``loads`` parses the JSON text (the standard library's or orjson's)."""

    def __init__(self, contacts: list[Contact], experiments: Experiments, loads: Callable[[str], Any]) -> None:
        self.experiment_keys = {ids[0]: key for key, ids in experiments.items()}  # database id -> key
        self.wanted = {c.key for c in contacts}
        self.loads = loads
        self.replays: Replays = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.sticky: dict[str, list[tuple[str, int, str | None, bool]]] = {}
        self.config_generation: int | None = None

    def file(self, rows: Iterable[Sequence[Any]]) -> None:
        """File one statement's rows."""
        wanted, experiment_keys, loads = self.wanted, self.experiment_keys, self.loads
        replays, profiles, sticky = self.replays, self.profiles, self.sticky
        for kind, key, text, row_id, experiment_id, flag, document, owner in rows:
            if kind == "d":
                if (owner, key) in wanted:  # callers × ids over-fetches across callers
                    replays[(owner, key)] = (text, loads(document))
            elif kind == "p":
                profiles[key] = loads(document) if document is not None else {}
            elif kind == "g":
                self.config_generation = row_id
            else:
                sticky.setdefault(key, []).append((experiment_keys[experiment_id], row_id, text, bool(flag)))

    def apply(self, contacts: list[Contact]) -> Replays:
        """Set what was read on the contacts (profiles, and recorded arms as experiment key →
        (arm key, in holdout) with their exposure ids); return the stored decisions."""
        for c in contacts:
            c.profile = self.profiles.get(c.body.subscriber_id) or {}
            for experiment_key, exposure_id, arm_key, in_holdout in self.sticky.get(c.body.subscriber_id, ()):
                c.sticky[experiment_key] = (arm_key, in_holdout)
                c.assignment_ids[experiment_key] = exposure_id
        return self.replays


class SqlStore:
    """The decision store over SQLAlchemy sessions (every backend)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    @contextmanager
    def connect(self) -> Iterator[SqlConnection]:
        with _database_errors(), self.session_factory() as session:
            yield SqlConnection(session)


class SqlConnection:
    """The store's statements on one session; each method is one transaction."""

    writes_concurrently = False  # a session (and SQLite's connection) belongs to one thread

    def __init__(self, session: Session) -> None:
        self.session = session
        self.config_generation: int | None = None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """The session, committed at the end, reads included (SQLite: a reader must not hold
        an old snapshot into the write; a commit rather than a rollback also keeps SQLite's
        savepoint stack tidy when the store shares a caller's connection, as the tests'
        transactional fixture does)."""
        yield self.session
        self.session.commit()

    def read(self, contacts: list[Contact], experiments: Experiments) -> Replays:
        """One statement per 1,000 contacts: a UNION ALL of the stored decisions of these
        requests, the profiles and the arms recorded in running experiments. The JSON documents
        come as text, parsed here: a UNION cannot merge PostgreSQL's ``json`` (the answers) with
        its ``jsonb`` (the profiles), and text is what SQLite stores either way."""
        reads = ReadRows(contacts, experiments, json.loads)
        by_id = reads.experiment_keys
        no_int, no_flag, no_text = cast(null(), BigInteger), cast(null(), Boolean), cast(null(), String)
        with self._session() as session:
            self.config_generation = read_generation(session) or None
            for chunk in chunks(contacts):
                callers = list({c.caller for c in chunk})
                request_ids = [c.request_id for c in chunk]
                subscriber_ids = list({c.body.subscriber_id for c in chunk})
                parts: list[Select[*tuple[Any, ...]]] = [
                    select(
                        literal("d").label("kind"),
                        Decision.request_id.label("key"),
                        Decision.request_hash.label("text"),
                        no_int.label("id"),
                        no_int.label("experiment_id"),
                        no_flag.label("flag"),
                        cast(Decision.response, String).label("json"),
                        Decision.caller.label("owner"),
                    ).where(Decision.caller.in_(callers), Decision.request_id.in_(request_ids)),
                    select(
                        literal("p"),
                        Subscriber.id,
                        no_text,
                        no_int,
                        no_int,
                        no_flag,
                        cast(Subscriber.attributes, String),
                        no_text,
                    ).where(Subscriber.id.in_(subscriber_ids)),
                ]
                if by_id:
                    parts.append(
                        select(
                            literal("a"),
                            Exposure.subscriber_id,
                            Exposure.arm_key,
                            Exposure.id,
                            Exposure.experiment_id,
                            Exposure.in_holdout,
                            no_text,
                            no_text,
                        ).where(Exposure.experiment_id.in_(list(by_id)), Exposure.subscriber_id.in_(subscriber_ids))
                    )
                reads.file(session.execute(union_all(*parts)))
        return reads.apply(contacts)

    def write(
        self, contacts: list[Contact], experiments: Experiments, snapshot_version: int, now: datetime
    ) -> set[RequestKey]:
        with self._session() as session:
            self._record_exposures(session, contacts, experiments, now)
            rows = [decision_row(c, experiments, snapshot_version, now) for c in contacts]
            inserted: set[RequestKey] = set()
            for chunk in chunks(rows):
                inserted.update(
                    tuple(row)
                    for row in session.execute(
                        insert_ignoring_conflicts(session, Decision, ["caller", "request_id"]).returning(
                            Decision.caller, Decision.request_id
                        ),
                        chunk,
                    )
                )
            charges = [row for c in contacts if c.key in inserted for row in charge_rows(c)]
            if charges:
                session.execute(dialect_insert(session, BudgetCharge), charges)
        return {c.key for c in contacts} - inserted

    @staticmethod
    def _record_exposures(session: Session, contacts: list[Contact], experiments: Experiments, now: datetime) -> None:
        """Insert the first exposures (insert-if-absent: concurrent channels store one row)
        and note their ids on the contacts."""
        new = [(c, ids) for c in contacts if (ids := c.new_exposure(experiments)) is not None]
        if not new:
            return
        session.execute(
            insert_ignoring_conflicts(session, Exposure, ["experiment_id", "subscriber_id"]),
            [exposure_row(c, experiment_id, phase, now) for c, (experiment_id, phase) in new],
        )
        keys = list({(experiment_id, c.body.subscriber_id) for c, (experiment_id, _) in new})
        found: dict[tuple[int, str], int] = {}
        for chunk in chunks(keys):
            found.update(
                {
                    (eid, sid): xid
                    for eid, sid, xid in session.execute(
                        select(Exposure.experiment_id, Exposure.subscriber_id, Exposure.id).where(
                            tuple_(Exposure.experiment_id, Exposure.subscriber_id).in_(chunk)
                        )
                    )
                }
            )
        for c, (experiment_id, _) in new:
            assert c.result is not None and c.result.experiment is not None
            c.assignment_ids[c.result.experiment.key] = found[(experiment_id, c.body.subscriber_id)]

    def stored(self, keys: list[RequestKey]) -> Replays:
        wanted, found = set(keys), {}  # type: set[RequestKey], Replays
        with self._session() as session:
            for chunk in chunks(keys):
                rows = session.execute(
                    select(Decision.caller, Decision.request_id, Decision.request_hash, Decision.response).where(
                        Decision.caller.in_(list({caller for caller, _ in chunk})),
                        Decision.request_id.in_([rid for _, rid in chunk]),
                    )
                )
                found.update(
                    {
                        (caller, rid): (digest, response)
                        for caller, rid, digest, response in rows
                        if (caller, rid) in wanted
                    }
                )
        return found

    def charged(self, keys: list[RequestKey]) -> set[RequestKey]:
        wanted = set(keys)
        with self._session() as session:
            rows = session.execute(
                select(Decision.caller, Decision.request_id)
                .join(BudgetCharge, BudgetCharge.decision_id == Decision.id)
                .where(
                    Decision.caller.in_(list({caller for caller, _ in keys})),
                    Decision.request_id.in_([rid for _, rid in keys]),
                )
            )
            return {(caller, rid) for caller, rid in rows if (caller, rid) in wanted}


@contextmanager
def _database_errors() -> Iterator[None]:
    """Turn SQLAlchemy's connection failures into :class:`StoreUnavailable`."""
    try:
        yield
    except OperationalError as exc:
        raise StoreUnavailable(str(exc)) from exc
