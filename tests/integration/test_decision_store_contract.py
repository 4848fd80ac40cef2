"""The decision store's contract (``decisioning.store.DecisionStore``), stated once and checked
against every store on the same database: :class:`~decisioning.store.SqlStore` on SQLite and
PostgreSQL, :class:`~decisioning.store_pg.PostgresStore` on PostgreSQL.

The stores run as in production: each call in transactions of its own, committed (the SQL store
on sessions of an engine, the PostgreSQL store on its own autocommit pool). So this module has
a committed database of its own, migrated once (a SQLite file, or a PostgreSQL database beside
the test one, dropped at the end), and empties the tables it writes after each test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Column, MetaData, String, Text, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from decisioning import store_pg
from decisioning.core import DecisionResult, ExperimentOutcome
from decisioning.models import Decision
from decisioning.schemas import DecisionIn
from decisioning.service import new_ids, request_hash
from decisioning.snapshot import Action
from decisioning.store import (
    IN_CHUNK,
    Contact,
    DecisionStore,
    Experiments,
    SqlStore,
    StoreUnavailable,
    charge_rows,
    decision_row,
    exposure_row,
)
from decisioning.store_pg import PostgresStore, table_of
from experiments.models import Experiment, ExperimentArm, Exposure
from infra.config_version import ConfigGeneration
from infra.db import Database, make_engine, session_scope
from offers.models import BudgetCharge, Subscriber
from tests.databases import throwaway_database

NOW = datetime(2026, 5, 14, 9, 30, tzinfo=UTC)
PERIOD = "2026-05"
SNAPSHOT_VERSION = 42
CALLER = "key:contract"
OTHER_CALLER = "key:other"
CREDIT = Action("BILL_CREDIT_5", "€5 bill credit", 5.0)
MANY = IN_CHUNK + IN_CHUNK // 2  # more contacts than one IN (...) list takes
UNREACHABLE_POSTGRESQL = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
UNREACHABLE_SQLITE = "sqlite:////nonexistent-carepilot-dir/carepilot.db"
# the config generation's row as the migrations leave it (each test starts with it)
MIGRATED_GENERATION = {"id": 1, "generation": 1, "changed_at": NOW}
# what the tests write, children first (the order they are emptied in)
WRITTEN_TABLES = (BudgetCharge, Decision, Exposure, ExperimentArm, Experiment, Subscriber, ConfigGeneration)


# --- the database and the stores ---------------------------------------------------------------


@pytest.fixture(scope="module")
def store_database(settings, tmp_path_factory) -> Iterator[Database]:
    """A migrated database of the suite's kind that only this module uses."""
    with throwaway_database(settings, "store_contract", tmp_path_factory.mktemp("store_contract")) as database:
        yield database


def make_store_of(kind: str, session_factory: sessionmaker) -> DecisionStore:
    return SqlStore(session_factory) if kind == "sql" else PostgresStore(session_factory)


def skip_unless_runnable(kind: str, settings: Any) -> None:
    if kind == "postgres" and settings.is_sqlite:
        pytest.skip("the PostgreSQL store runs on PostgreSQL only")


@pytest.fixture(params=["sql", "postgres"])
def store_kind(request, settings) -> str:
    skip_unless_runnable(request.param, settings)
    return str(request.param)


@pytest.fixture()
def store(store_kind, store_database) -> Iterator[DecisionStore]:
    yield make_store_of(store_kind, store_database.sessionmaker)
    with store_database.engine.begin() as conn:
        for model in WRITTEN_TABLES:
            conn.execute(delete(model))
        conn.execute(insert(ConfigGeneration).values(MIGRATED_GENERATION))


# --- building contacts as the service does -------------------------------------------------------


def contact(subscriber_id: str, request_id: str, *, caller: str = CALLER, channel: str = "sms") -> Contact:
    body = DecisionIn(subscriber_id=subscriber_id, channel=channel, request_id=request_id)
    return Contact(0, caller, body, request_id, request_hash(body))


def decide(
    c: Contact,
    *,
    experiment: str | None = None,
    arm: str | None = None,
    offer: Action | None = None,
    budgets: tuple[str, ...] = (),
    tier: str | None = "basic",
    degraded: bool = False,
) -> Contact:
    """Give ``c`` a decision: ``arm`` of ``experiment`` (None: the holdout), the paid ``offer``
    charged to ``budgets``. A fresh decision id each time, as each attempt gets."""
    outcome = None
    if experiment is not None:
        outcome = ExperimentOutcome(
            experiment, arm, in_holdout=arm is None, new_exposure=experiment not in c.sticky, offer_code=None
        )
    c.result = DecisionResult(
        subscriber_id=c.body.subscriber_id,
        channel=c.body.channel,
        snapshot_version=SNAPSHOT_VERSION,
        tier=tier,
        risk_level="yellow",
        risk_reasons=(),
        lifecycle_stage=None,
        action=offer,
        experiment=outcome,
        excluded=(),
        probability=0.5 if outcome else 1.0,
        score=None,
        budgets_to_reserve=budgets,
        cost=offer.cost if offer else 0.0,
        degraded=degraded,
    )
    [decision_id] = new_ids(1)
    c.response = {"decision_id": decision_id, **c.result.as_json(), "created_at": NOW.isoformat(), "replayed": False}
    c.charges = tuple((code, PERIOD, Decimal(str(offer.cost))) for code in budgets) if offer else ()
    return c


def decision_id(c: Contact) -> str:
    assert c.response is not None
    return str(c.response["decision_id"])


def read(store: DecisionStore, contacts: list[Contact], experiments: Experiments) -> dict[Any, Any]:
    with store.connect() as db:
        return db.read(contacts, experiments)


def write(store: DecisionStore, contacts: list[Contact], experiments: Experiments) -> set[tuple[str, str]]:
    with store.connect() as db:
        return db.write(contacts, experiments, SNAPSHOT_VERSION, NOW)


# --- seeding and looking -------------------------------------------------------------------------


def seed_subscribers(database: Database, profiles: dict[str, dict[str, Any]]) -> None:
    with session_scope(database.sessionmaker) as session:
        session.add_all(Subscriber(id=sid, attributes=doc, tier=None, tiers={}) for sid, doc in profiles.items())


def seed_experiment(database: Database, key: str, arms: tuple[str, ...] = ("control", "credit")) -> tuple[int, int]:
    """A running experiment with these arms; returns (its id, its phase) as ``Experiments`` holds them."""
    with session_scope(database.sessionmaker) as session:
        experiment = Experiment(
            key=key,
            name=key,
            status="pilot",
            target={},
            hash_seed=key,
            guardrails=[],
            promotion_policy={},
            arms=[ExperimentArm(key=a, weight=1.0, position=i, is_control=i == 0) for i, a in enumerate(arms)],
        )
        session.add(experiment)
        session.flush()
        return experiment.id, experiment.phase


def record_exposures(database: Database, experiment_id: int, arms: dict[str, str | None]) -> dict[str, int]:
    """Recorded arms (None: the holdout); returns their exposure ids by subscriber."""
    with session_scope(database.sessionmaker) as session:
        exposures = [
            Exposure(
                experiment_id=experiment_id,
                subscriber_id=sid,
                arm_key=arm,
                in_holdout=arm is None,
                phase=1,
                tier="basic",
                channel="sms",
                first_exposed_at=NOW,
            )
            for sid, arm in arms.items()
        ]
        session.add_all(exposures)
        session.flush()
        return {x.subscriber_id: x.id for x in exposures}


def table_rows(database: Database, model: Any) -> list[dict[str, Any]]:
    with database.sessionmaker() as session:
        return [dict(row) for row in session.execute(select(model.__table__)).mappings()]


def decisions_by_request(database: Database) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["caller"], row["request_id"]): row for row in table_rows(database, Decision)}


# --- the contract ------------------------------------------------------------------------------


def test_a_read_gives_each_contact_its_profile_and_its_recorded_arms_in_running_experiments(store, store_database):
    seed_subscribers(store_database, {"s-1": {"arpu": 42.5, "ltv": 900.0}, "s-2": {"arpu": 10.0}})
    running = seed_experiment(store_database, "running")
    ended = seed_experiment(store_database, "ended")
    recorded = record_exposures(store_database, running[0], {"s-1": "credit", "s-3": None})
    record_exposures(store_database, ended[0], {"s-1": "control"})
    contacts = [contact("s-1", "r-1"), contact("s-2", "r-2"), contact("s-3", "r-3")]

    assert read(store, contacts, {"running": running}) == {}  # nothing stored for these requests yet
    s1, s2, s3 = contacts
    assert (s1.profile, s2.profile, s3.profile) == ({"arpu": 42.5, "ltv": 900.0}, {"arpu": 10.0}, {})
    assert (s1.sticky, s2.sticky, s3.sticky) == ({"running": ("credit", False)}, {}, {"running": (None, True)})
    assert (s1.assignment_ids, s3.assignment_ids) == ({"running": recorded["s-1"]}, {"running": recorded["s-3"]})

    without_experiments = [contact("s-1", "r-1")]
    read(store, without_experiments, {})
    assert without_experiments[0].profile == {"arpu": 42.5, "ltv": 900.0}
    assert without_experiments[0].sticky == {} and without_experiments[0].assignment_ids == {}


def test_a_stored_decision_is_read_back_as_a_replay_with_its_hash_and_response(store, store_database):
    seed_subscribers(store_database, {"s-1": {"ltv": 1000.0}})
    first = decide(contact("s-1", "r-1"), offer=CREDIT, budgets=("fund",))
    assert write(store, [first], {}) == set()

    retry, fresh = contact("s-1", "r-1"), contact("s-1", "r-2")
    replays = read(store, [retry, fresh], {})
    assert replays == {(CALLER, "r-1"): (first.request_hash, first.response)}
    with store.connect() as db:
        assert db.stored([(CALLER, "r-1"), (CALLER, "r-2")]) == replays


def test_a_replay_is_matched_on_caller_and_request_id_together(store, store_database):
    mine, theirs = decide(contact("s-1", "r-1")), decide(contact("s-1", "r-2", caller=OTHER_CALLER))
    write(store, [mine, theirs], {})

    crossed = [contact("s-1", "r-2"), contact("s-1", "r-1", caller=OTHER_CALLER)]
    assert read(store, crossed, {}) == {}
    with store.connect() as db:
        assert db.stored([c.key for c in crossed]) == {}
        assert db.stored([mine.key, theirs.key]) == {
            mine.key: (mine.request_hash, mine.response),
            theirs.key: (theirs.request_hash, theirs.response),
        }


def test_a_write_stores_the_rows_the_service_builds_column_for_column(store, store_database):
    experiments = {"exp": seed_experiment(store_database, "exp")}
    paid = decide(contact("s-1", "r-1"), experiment="exp", arm="credit", offer=CREDIT, budgets=("fund", "q-fund"))
    held_out = decide(contact("s-2", "r-2", channel="app"), experiment="exp", arm=None, tier=None, degraded=True)
    assert write(store, [paid, held_out], experiments) == set()

    exposures = {row["subscriber_id"]: row for row in table_rows(store_database, Exposure)}
    for c in (paid, held_out):
        exposure = exposures.pop(c.body.subscriber_id)
        assert {name: value for name, value in exposure.items() if name != "id"} == exposure_row(
            c, *experiments["exp"], NOW
        )
        stored = decisions_by_request(store_database)[c.key]
        assert stored == decision_row(c, experiments, SNAPSHOT_VERSION, NOW) | {"assignment_id": exposure["id"]}
    assert exposures == {}
    charges = sorted(table_rows(store_database, BudgetCharge), key=lambda row: row["budget_code"])
    assert charges == charge_rows(paid) and len(charges) == 2


def test_the_first_exposure_wins_and_each_decision_links_to_the_recorded_one(store, store_database):
    experiments = {"exp": seed_experiment(store_database, "exp")}
    first = decide(contact("s-1", "r-1"), experiment="exp", arm="credit")
    write(store, [first], experiments)
    [exposure] = table_rows(store_database, Exposure)

    # another channel decided before the first exposure was stored, so it exposes again, on
    # another arm: the recorded arm stays, and its decision links to the recorded exposure
    racing = decide(contact("s-1", "r-2", channel="app"), experiment="exp", arm="control")
    assert write(store, [racing], experiments) == set()
    # two first contacts of one subscriber in one write: one exposure, both linked to it
    twins = [decide(contact("s-2", f"twin-{i}"), experiment="exp", arm="credit") for i in range(2)]
    assert write(store, twins, experiments) == set()
    # a contact that read its recorded arm exposes no one and links to what it read
    sticky = contact("s-1", "r-3")
    read(store, [sticky], experiments)
    write(store, [decide(sticky, experiment="exp", arm="credit")], experiments)

    exposures = {row["subscriber_id"]: row for row in table_rows(store_database, Exposure)}
    assert len(table_rows(store_database, Exposure)) == 2
    assert exposures["s-1"] == exposure and exposure["arm_key"] == "credit"
    links = {key: row["assignment_id"] for key, row in decisions_by_request(store_database).items()}
    twin = exposures["s-2"]["id"]
    assert links == {
        (CALLER, "r-1"): exposure["id"],
        (CALLER, "r-2"): exposure["id"],
        (CALLER, "r-3"): exposure["id"],
        (CALLER, "twin-0"): twin,
        (CALLER, "twin-1"): twin,
    }


def test_a_decision_and_its_budget_charges_land_together_or_not_at_all(store, store_database):
    experiments = {"exp": seed_experiment(store_database, "exp")}
    whole = decide(contact("s-1", "r-1"), experiment="exp", arm="credit", offer=CREDIT, budgets=("fund", "q-fund"))
    assert write(store, [whole], experiments) == set()
    assert decisions_by_request(store_database).keys() == {whole.key}
    assert sorted(row["budget_code"] for row in table_rows(store_database, BudgetCharge)) == ["fund", "q-fund"]

    # a write whose last rows the database refuses (one budget charged twice: its primary key)
    # stores none of its decisions, exposures or charges
    good = decide(contact("s-2", "r-2"), experiment="exp", arm="credit", offer=CREDIT, budgets=("fund",))
    refused = decide(contact("s-3", "r-3"), offer=CREDIT, budgets=("fund",))
    refused.charges += refused.charges
    with pytest.raises((IntegrityError, psycopg.IntegrityError)):
        write(store, [good, refused], experiments)
    assert decisions_by_request(store_database).keys() == {whole.key}
    assert [row["subscriber_id"] for row in table_rows(store_database, Exposure)] == ["s-1"]
    assert {row["decision_id"] for row in table_rows(store_database, BudgetCharge)} == {decision_id(whole)}

    retried = [decide(contact("s-2", "r-2"), experiment="exp", arm="credit", offer=CREDIT, budgets=("fund",))]
    assert write(store, retried, experiments) == set()  # the store is usable after the refusal
    assert len(table_rows(store_database, BudgetCharge)) == 3


def test_a_request_another_writer_stored_first_is_lost_and_never_stored_twice(store, store_database):
    seed_subscribers(store_database, {"s-1": {"ltv": 1000.0}})
    # two attempts of one request read at once, before either stored anything
    attempts = [contact("s-1", "r-1"), contact("s-1", "r-1")]
    for attempt in attempts:
        assert read(store, [attempt], {}) == {}
    winner = decide(attempts[0], offer=CREDIT, budgets=("fund",))
    loser = decide(attempts[1], offer=CREDIT, budgets=("fund", "q-fund"))
    other = decide(contact("s-1", "r-2"), offer=CREDIT, budgets=("fund",))

    assert write(store, [winner], {}) == set()
    assert write(store, [loser, other], {}) == {loser.key}
    stored = decisions_by_request(store_database)
    assert stored.keys() == {winner.key, other.key}
    assert stored[winner.key]["id"] == decision_id(winner)
    charged_ids = sorted(row["decision_id"] for row in table_rows(store_database, BudgetCharge))
    assert charged_ids == sorted([decision_id(winner), decision_id(other)])
    with store.connect() as db:  # what the loser is answered with
        assert db.stored([loser.key]) == {winner.key: (winner.request_hash, winner.response)}


def test_charged_reports_exactly_the_requests_whose_decision_charged_a_budget(store, store_database):
    write(
        store,
        [
            decide(contact("s-1", "paid"), offer=CREDIT, budgets=("fund", "q-fund")),
            decide(contact("s-1", "free")),
            decide(contact("s-1", "theirs", caller=OTHER_CALLER), offer=CREDIT, budgets=("fund",)),
        ],
        {},
    )
    asked = [(CALLER, "paid"), (CALLER, "free"), (CALLER, "theirs"), (OTHER_CALLER, "paid"), (CALLER, "never")]
    with store.connect() as db:
        assert db.charged(asked) == {(CALLER, "paid")}
        assert db.charged([(OTHER_CALLER, "theirs")]) == {(OTHER_CALLER, "theirs")}


def test_a_read_gives_the_config_generation_the_database_holds(store, store_database):
    with store.connect() as db:
        assert db.config_generation is None  # before a read
        db.read([contact("s-1", "r-1")], {})
        assert db.config_generation == MIGRATED_GENERATION["generation"]
    with session_scope(store_database.sessionmaker) as session:
        session.execute(update(ConfigGeneration).where(ConfigGeneration.id == 1).values(generation=7))
    with store.connect() as db:
        db.read([contact("s-1", "r-1")], {})
        assert db.config_generation == 7
    with session_scope(store_database.sessionmaker) as session:
        session.execute(delete(ConfigGeneration))
    with store.connect() as db:
        db.read([contact("s-1", "r-1")], {})
        assert db.config_generation is None


def test_many_contacts_across_several_in_lists_keep_every_guarantee(store, store_database):
    seed_subscribers(store_database, {f"b-{i}": {"arpu": float(i)} for i in range(MANY)})
    experiments = {"exp": seed_experiment(store_database, "exp")}
    # a quarter recorded before: the others' first exposures are more than one IN list too
    recorded = record_exposures(store_database, experiments["exp"][0], {f"b-{i}": "control" for i in range(0, MANY, 4)})
    contacts = [contact(f"b-{i}", f"bulk-{i}") for i in range(MANY)]

    assert read(store, contacts, experiments) == {}
    assert [c.profile for c in contacts] == [{"arpu": float(i)} for i in range(MANY)]
    assert {c.body.subscriber_id: c.assignment_ids["exp"] for c in contacts if c.sticky} == recorded
    for i, c in enumerate(contacts):
        arm = c.sticky["exp"][0] if c.sticky else "credit"
        decide(c, experiment="exp", arm=arm, offer=CREDIT, budgets=("fund",) if i % 3 == 0 else ())
    assert write(store, contacts, experiments) == set()

    exposure_of = {row["id"]: row["subscriber_id"] for row in table_rows(store_database, Exposure)}
    assert len(exposure_of) == MANY
    stored = decisions_by_request(store_database)
    assert {key: exposure_of[row["assignment_id"]] for key, row in stored.items()} == {
        c.key: c.body.subscriber_id for c in contacts
    }
    keys = [c.key for c in contacts]
    with store.connect() as db:
        assert db.stored(keys) == {c.key: (c.request_hash, c.response) for c in contacts}
        assert db.charged(keys) == {c.key for i, c in enumerate(contacts) if i % 3 == 0}

    again = [contact(f"b-{i}", f"bulk-{i}") for i in range(MANY)]
    assert read(store, again, experiments) == {c.key: (c.request_hash, c.response) for c in contacts}
    assert write(store, [decide(c, offer=CREDIT, budgets=("fund",)) for c in again], experiments) == set(keys)
    assert len(table_rows(store_database, Decision)) == MANY
    assert len(table_rows(store_database, BudgetCharge)) == len(range(0, MANY, 3))


@pytest.mark.parametrize(
    ("kind", "unreachable"),
    [("sql", UNREACHABLE_SQLITE), ("sql", UNREACHABLE_POSTGRESQL), ("postgres", UNREACHABLE_POSTGRESQL)],
)
def test_an_unreachable_database_is_store_unavailable(settings, kind, unreachable):
    skip_unless_runnable(kind, settings)
    engine = make_engine(unreachable)
    store = make_store_of(kind, sessionmaker(bind=engine))
    try:
        for use in (
            lambda db: db.read([contact("s-1", "r-1")], {}),
            lambda db: db.write([decide(contact("s-1", "r-1"))], {}, SNAPSHOT_VERSION, NOW),
            lambda db: db.stored([(CALLER, "r-1")]),
            lambda db: db.charged([(CALLER, "r-1")]),
        ):
            with pytest.raises(StoreUnavailable), store.connect() as db:
                use(db)
    finally:
        engine.dispose()


# --- the PostgreSQL store's statements come from the models -------------------------------------


def insert_columns(sql: str, table: str) -> list[str]:
    """The column list of ``INSERT INTO table (...)`` in ``sql``."""
    match = re.search(rf"INSERT INTO {table} \(([^)]*)\)", sql)
    assert match is not None, f"no INSERT INTO {table} in the statement"
    return [name.strip() for name in match.group(1).split(",")]


@pytest.mark.parametrize(
    ("model", "generated"),
    [(Decision, set()), (Exposure, {"id"}), (BudgetCharge, set())],
    ids=["decisions", "assignments", "budget_charges"],
)
def test_the_postgresql_write_inserts_every_column_of_the_models(model, generated):
    expected = [column.name for column in table_of(model).columns if column.name not in generated]
    assert insert_columns(store_pg._WRITE_SQL, model.__tablename__) == expected


def test_a_column_added_to_a_model_reaches_the_postgresql_write():
    metadata = MetaData()
    decisions, exposures, charges = (table_of(m).to_metadata(metadata) for m in (Decision, Exposure, BudgetCharge))
    decisions.append_column(Column("campaign", String(40)))
    exposures.append_column(Column("campaign_wave", String(8)))
    charges.append_column(Column("note", Text))

    sql = store_pg.write_sql(decisions, exposures, charges)
    assert insert_columns(sql, "decisions")[-1] == "campaign"
    assert insert_columns(sql, "assignments")[-1] == "campaign_wave"
    assert insert_columns(sql, "budget_charges")[-1] == "note"
    # each new column is also a field of its rows' JSON document, typed as its column
    for definition in ("campaign VARCHAR(40)", "campaign_wave VARCHAR(8)", "note TEXT"):
        assert definition in sql
    assert store_pg.document_fields(decisions)[-1] == "campaign"
    assert store_pg.write_sql(table_of(Decision), table_of(Exposure), table_of(BudgetCharge)) == store_pg._WRITE_SQL


def test_the_postgresql_write_is_short_enough_for_psycopgs_statement_cache():
    # psycopg keeps a parsed statement only under 4 KiB; longer ones are parsed on every call
    assert len(store_pg._WRITE_SQL) <= 4096
