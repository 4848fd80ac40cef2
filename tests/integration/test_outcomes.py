"""Outcomes: single and bulk (CSV, JSON lines) ingest, idempotency, the latest-report rule,
day_n, rejection of unknown experiments, subscribers and decisions, roles and validation."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import timedelta, timezone

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update

from decisioning.repository import decision_exposures
from experiments.models import Exposure, Outcome
from experiments.outcomes import OutcomeIn, import_outcomes
from infra.audit import AuditEntry
from infra.db import get_database, utcnow
from infra.errors import PayloadTooLarge
from tests.integration.care_sms_pilot import start_care_sms_pilot

KEY = "care-sms"
EXPERIMENT = {
    "key": KEY,
    "name": "Care SMS vs no care",
    "coverage": 1.0,
    "arms": [{"key": "control"}, {"key": "care_sms", "offer_code": "CARE_SMS"}],
}
SUBSCRIBERS = ("s-1", "s-2", "s-3", "s-4", "s-5")
# Every exposure is back-dated to T0 so that days after exposure are known exactly
T0 = (utcnow() - timedelta(days=100)).replace(microsecond=0)
CSV = {"Content-Type": "text/csv"}
JSONL = {"Content-Type": "application/x-ndjson"}


def at(days: float, hours: float = 0) -> str:
    return (T0 + timedelta(days=days, hours=hours)).isoformat().replace("+00:00", "Z")


@pytest.fixture()
def exposed(client, auth, db):
    """A running experiment that exposed SUBSCRIBERS at T0; returns their exposure ids."""
    start_care_sms_pilot(client, auth, EXPERIMENT)
    for sid in SUBSCRIBERS:
        r = client.post(f"/api/v1/experiments/{KEY}/exposures", json={"subscriber_id": sid}, headers=auth["sms"])
        assert r.status_code == 201, r.json
    db.execute(update(Exposure).values(first_exposed_at=T0))
    db.commit()
    return dict(db.execute(select(Exposure.subscriber_id, Exposure.id)).all())


def outcome(sid: str = "s-1", type_: str = "delivered", **extra) -> dict:
    return {"experiment": KEY, "subscriber_id": sid, "type": type_, "occurred_at": at(1), **extra}


def stored(db) -> list[tuple]:
    """(subscriber, type, value, day_n, occurred_at) of every stored outcome, sorted."""
    db.expire_all()
    result = db.execute(
        select(Exposure.subscriber_id, Outcome.type, Outcome.value, Outcome.day_n, Outcome.occurred_at).join(
            Exposure, Exposure.id == Outcome.assignment_id
        )
    )
    return sorted((tuple(r) for r in result), key=repr)


def count(db) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(Outcome))


def bulk(client, headers, body: str, content_type: dict):
    return client.post("/api/v1/outcomes/bulk", data=body.encode(), headers={**headers, **content_type})


def jsonl(*rows: dict | str) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


# --- one outcome ----------------------------------------------------------------------------


def test_an_outcome_is_stored_against_the_exposure(client, auth, db, exposed):
    r = client.post("/api/v1/outcomes", json=outcome(type_="revenue", value=12.5), headers=auth["sms"])
    assert r.status_code == 201, r.json
    assert r.json["experiment"] == KEY and r.json["subscriber_id"] == "s-1" and r.json["value"] == 12.5
    assert r.json["decision_id"] is None and r.json["day_n"] is None
    row = db.scalar(select(Outcome))
    assert row.assignment_id == exposed["s-1"] and row.occurred_at == T0 + timedelta(days=1)


def test_reposting_an_outcome_is_idempotent_and_the_latest_report_wins(client, auth, db, exposed):
    body = outcome(type_="revenue", value=10.0, occurred_at=at(5))
    assert client.post("/api/v1/outcomes", json=body, headers=auth["sms"]).status_code == 201
    again = client.post("/api/v1/outcomes", json=body, headers=auth["sms"])
    assert again.status_code == 200 and count(db) == 1
    # a correction with a later occurred_at replaces the value
    r = client.post("/api/v1/outcomes", json={**body, "value": 14.0, "occurred_at": at(6)}, headers=auth["sms"])
    assert r.status_code == 200 and r.json["value"] == 14.0
    # a replayed older report does not undo it; the answer shows what is stored
    r = client.post("/api/v1/outcomes", json=body, headers=auth["sms"])
    assert r.status_code == 200 and r.json["value"] == 14.0 and r.json["occurred_at"].startswith(at(6)[:19])
    assert stored(db) == [("s-1", "revenue", 14.0, None, T0 + timedelta(days=6))]


def test_day_n_is_computed_from_the_first_exposure_unless_given(client, auth, db, exposed):
    for body in (
        outcome("s-1", "retained", occurred_at=at(30, hours=20)),
        outcome("s-2", "retained", occurred_at=at(31, hours=2), day_n=30),
        outcome("s-3", "churned", occurred_at=at(0, hours=3)),
    ):
        r = client.post("/api/v1/outcomes", json=body, headers=auth["sms"])
        assert r.status_code == 201, r.json
    assert [(sid, day) for sid, _, _, day, _ in stored(db)] == [("s-1", 30), ("s-2", 30), ("s-3", 0)]


def test_retention_checks_are_kept_per_day_and_churn_once(client, auth, db, exposed):
    for body in (
        outcome("s-1", "retained", occurred_at=at(30), day_n=30),
        outcome("s-1", "retained", occurred_at=at(60), day_n=60),
        outcome("s-2", "churned", occurred_at=at(17)),
        outcome("s-2", "churned", occurred_at=at(20)),
    ):  # a correction of the churn day
        assert client.post("/api/v1/outcomes", json=body, headers=auth["sms"]).status_code in (200, 201)
    assert [(sid, t, day) for sid, t, _, day, _ in stored(db)] == [
        ("s-1", "retained", 30),
        ("s-1", "retained", 60),
        ("s-2", "churned", 20),
    ]


@pytest.mark.parametrize("headers", ["sms", "app", "call_centre", "retail", "admin", "marketing"])
def test_channels_and_writers_may_post_outcomes(client, auth, db, exposed, headers):
    r = client.post("/api/v1/outcomes", json=outcome(), headers=auth[headers])
    assert r.status_code == 201, r.json


def test_outcomes_need_a_key_and_the_right_role(client, auth, db, exposed):
    assert client.post("/api/v1/outcomes", json=outcome()).status_code == 401
    assert (
        client.post("/api/v1/outcomes", json=outcome(), headers={"Authorization": "Bearer cpk_wrong"}).status_code
        == 401
    )
    r = client.post("/api/v1/outcomes", json=outcome(), headers=auth["analyst"])
    assert r.status_code == 403 and r.json["error"]["code"] == "role_forbidden"
    assert bulk(client, {}, jsonl(outcome()), JSONL).status_code == 401
    assert bulk(client, auth["analyst"], jsonl(outcome()), JSONL).status_code == 403
    assert count(db) == 0


def test_an_outcome_for_an_unknown_decision_is_404(client, auth, db, exposed):
    body = {"decision_id": "d-123", "type": "accepted", "occurred_at": at(1)}
    r = client.post("/api/v1/outcomes", json=body, headers=auth["sms"])
    assert r.status_code == 404 and r.json["error"]["code"] == "unknown_decision"
    assert "d-123" in r.json["error"]["message"]
    assert count(db) == 0


def test_unknown_experiment_and_never_exposed_subscriber_are_404(client, auth, db, exposed):
    r = client.post("/api/v1/outcomes", json={**outcome(), "experiment": "nope"}, headers=auth["sms"])
    assert r.status_code == 404 and r.json["error"]["code"] == "experiment_not_found"
    r = client.post("/api/v1/outcomes", json=outcome("stranger"), headers=auth["sms"])
    assert r.status_code == 404 and r.json["error"]["code"] == "not_exposed"
    assert "'stranger' was never exposed to experiment 'care-sms'" in r.json["error"]["message"]
    assert count(db) == 0


def test_occurred_at_must_fit_the_exposure(client, auth, db, exposed):
    r = client.post("/api/v1/outcomes", json=outcome(occurred_at=at(-1)), headers=auth["sms"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_outcome"
    assert "before the subscriber's first exposure" in r.json["error"]["message"]
    future = (utcnow() + timedelta(hours=2)).isoformat()
    r = client.post("/api/v1/outcomes", json=outcome(occurred_at=future), headers=auth["sms"])
    assert r.status_code == 400 and "in the future" in r.json["error"]["message"]
    # a few minutes of clock skew is tolerated
    r = client.post("/api/v1/outcomes", json=outcome(occurred_at=at(0, hours=-0.05)), headers=auth["sms"])
    assert r.status_code == 201
    # other offsets are stored as the same instant in UTC
    local = (T0 + timedelta(days=2)).astimezone(timezone(timedelta(hours=8))).isoformat()
    r = client.post("/api/v1/outcomes", json=outcome("s-2", occurred_at=local), headers=auth["sms"])
    assert r.status_code == 201 and r.json["occurred_at"] == (T0 + timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    "change, path",
    [
        ({"type": "opened"}, "$.type"),
        ({"type": 3}, "$.type"),
        ({"value": "12.5"}, "$.value"),
        ({"value": True}, "$.value"),
        ({"day_n": "30"}, "$.day_n"),
        ({"day_n": 30.5}, "$.day_n"),
        ({"day_n": -1}, "$.day_n"),
        ({"occurred_at": "2025-06-01T10:00:00"}, "$.occurred_at"),  # no time zone
        ({"occurred_at": "1700000000"}, "$.occurred_at"),
        ({"occurred_at": "yesterday"}, "$.occurred_at"),
        ({"occurred_at": "0001-01-01T00:00:00+01:00"}, "$.occurred_at"),  # no UTC equivalent
        ({"subscriber_id": 42}, "$.subscriber_id"),
        ({"subscriber_id": "bad\u0007id"}, "$.subscriber_id"),
        ({"experiment": "no spaces allowed"}, "$.experiment"),
        ({"channel": "sms"}, "$.channel"),  # unknown field
        ({"type": "revenue"}, "$"),  # revenue without a value
        ({"day_n": 30}, "$"),  # day_n on a delivered outcome
        ({"experiment": None}, "$"),  # neither experiment + subscriber nor decision
    ],
)
def test_bad_outcome_bodies_are_400_with_the_path(client, auth, db, exposed, change, path):
    r = client.post("/api/v1/outcomes", json={**outcome(), **change}, headers=auth["sms"])
    assert r.status_code == 400 and r.json["error"]["code"] == "validation_error", r.json
    assert path in [d["path"] for d in r.json["error"]["details"]]
    assert count(db) == 0


@pytest.mark.parametrize("raw", ['{"experiment": ', "[1, 2]", '"text"', '{"value": NaN}', ""])
def test_malformed_outcome_json_is_400(client, auth, db, exposed, raw):
    r = client.post("/api/v1/outcomes", data=raw, headers={**auth["sms"], "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"]["code"] in ("invalid_json", "validation_error"), r.json


def test_outcome_bodies_must_be_json(client, auth, exposed):
    r = client.post("/api/v1/outcomes", data="type=delivered", headers={**auth["sms"], "Content-Type": "text/plain"})
    assert r.status_code == 415


# --- bulk -------------------------------------------------------------------------------------


def test_bulk_csv_keeps_good_rows_and_reports_bad_ones_by_line(client, auth, db, exposed):
    body = (
        "experiment,subscriber_id,type,value,occurred_at,day_n\n"
        f"{KEY},s-1,retained,,{at(30)},30\n"  # 2 good
        f"{KEY},s-2,revenue,19.9,{at(3)},\n"  # 3 good
        f"{KEY},s-3,revenue,,{at(3)},\n"  # 4 no value
        f"{KEY},stranger,delivered,,{at(1)},\n"  # 5 never exposed
        f"nope,s-1,delivered,,{at(1)},\n"  # 6 unknown experiment
        f"{KEY},s-4,opened,,{at(1)},\n"  # 7 unknown type
        f"{KEY},s-4,delivered,,{at(-3)},\n"  # 8 before exposure
        f"{KEY},s-4,delivered,,{at(1)}\n"  # 9 five columns
        f"{KEY},s-5,churned,,{at(45, 5)},\n"  # 10 good, day 45
        "\n"  # 11 blank: skipped
        f"{KEY},s-5,accepted,,not-a-time,\n"
    )  # 12 bad time
    r = bulk(client, auth["sms"], body, CSV)
    assert r.status_code == 200, r.json
    assert r.json["accepted"] == 3 and r.json["rejected_count"] == 7 and r.json["format"] == "csv"
    errors = {e["line"]: e["error"] for e in r.json["rejected"]}
    assert [e["line"] for e in r.json["rejected"]] == [4, 5, 6, 7, 8, 9, 12]
    assert "revenue outcome needs a value" in errors[4]
    assert "'stranger' was never exposed" in errors[5]
    assert errors[6] == "no experiment 'nope'"
    assert errors[7].startswith("type: ")
    assert "before the subscriber's first exposure" in errors[8]
    assert errors[9] == "expected 6 columns as in the header, got 5"
    assert errors[12].startswith("occurred_at: ")
    assert stored(db) == [
        ("s-1", "retained", None, 30, T0 + timedelta(days=30)),
        ("s-2", "revenue", 19.9, None, T0 + timedelta(days=3)),
        ("s-5", "churned", None, 45, T0 + timedelta(days=45, hours=5)),
    ]


def test_bulk_jsonl_keeps_good_rows_and_reports_bad_ones_by_line(client, auth, db, exposed):
    body = jsonl(
        outcome("s-1", "delivered"),  # 1
        '{"experiment": "care-sms", ',  # 2 broken JSON
        "[1, 2]",  # 3 not an object
        {**outcome("s-2"), "value": "7"},  # 4 text for a number
        {**outcome("s-2"), "colour": "red"},  # 5 unknown field
        {"decision_id": "d-9", "type": "accepted", "occurred_at": at(1)},  # 6 decision
        outcome("s-2", "accepted"),  # 7
        "",  # 8 blank
        outcome("s-3", "complaint", value=1),
    )  # 9
    r = bulk(client, auth["admin"], body, JSONL)
    assert r.status_code == 200, r.json
    assert r.json["accepted"] == 3 and r.json["rejected_count"] == 5
    errors = {e["line"]: e["error"] for e in r.json["rejected"]}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert errors[2].startswith("invalid JSON") and "object" in errors[3]
    assert errors[4].startswith("value: ") and "colour" in errors[5]
    assert "unknown decision id 'd-9'" in errors[6]
    assert [(sid, t) for sid, t, *_ in stored(db)] == [("s-1", "delivered"), ("s-2", "accepted"), ("s-3", "complaint")]


def test_bulk_reimport_is_idempotent_and_duplicates_keep_the_latest(client, auth, db, exposed):
    body = jsonl(
        outcome("s-1", "revenue", value=5.0, occurred_at=at(10)),
        outcome("s-1", "revenue", value=9.0, occurred_at=at(12)),
        outcome("s-1", "revenue", value=7.0, occurred_at=at(11)),  # older than line 2
        outcome("s-2", "retained", day_n=30, occurred_at=at(30)),
    )
    for _ in range(2):
        r = bulk(client, auth["sms"], body, JSONL)
        assert r.status_code == 200 and r.json["accepted"] == 4 and r.json["rejected_count"] == 0
    assert stored(db) == [
        ("s-1", "revenue", 9.0, None, T0 + timedelta(days=12)),
        ("s-2", "retained", None, 30, T0 + timedelta(days=30)),
    ]


def test_batches_keep_line_order_and_the_latest_report_across_batches(app, db, exposed):
    lines: list[dict | str] = [outcome(sid, "delivered", occurred_at=at(1)) for sid in SUBSCRIBERS]
    lines.insert(2, outcome("stranger"))
    lines.insert(4, "{broken")
    lines += [
        outcome("s-1", "revenue", value=1.0, occurred_at=at(3)),
        outcome("s-1", "revenue", value=2.0, occurred_at=at(4)),
        outcome("s-1", "revenue", value=3.0, occurred_at=at(2)),
    ]  # older: ignored
    report = import_outcomes(
        get_database(app).sessionmaker,
        io.StringIO(jsonl(*lines)),
        "jsonl",
        batch_rows=2,
        max_listed_errors=10,
        actor="test",
        decision_exposures=decision_exposures,
    )
    assert [e["line"] for e in report.rejected] == [3, 5]
    # batches of two records: [d1 d2] [stranger d3] [d4 d5] [r1 r2 → one row] [r3]
    assert (report.accepted, report.written, report.batches) == (8, 7, 5)
    assert ("s-1", "revenue", 2.0, None, T0 + timedelta(days=4)) in stored(db)
    assert count(db) == 6


def test_bulk_resolves_subscriber_ids_with_awkward_characters(client, auth, db, exposed):
    awkward = ['o"quote', "back\\slash", "com,ma", "{brace}", "sp ace", "NULL", "ünï"]
    for sid in awkward:
        r = client.post(f"/api/v1/experiments/{KEY}/exposures", json={"subscriber_id": sid}, headers=auth["sms"])
        assert r.status_code == 201, r.json
    db.execute(update(Exposure).values(first_exposed_at=T0))
    db.commit()
    r = bulk(client, auth["sms"], jsonl(*[outcome(sid) for sid in awkward]), JSONL)
    assert r.status_code == 200 and r.json["accepted"] == len(awkward), r.json
    assert sorted(sid for sid, *_ in stored(db)) == sorted(awkward)


CSV_COLUMNS = ("experiment", "subscriber_id", "decision_id", "type", "value", "occurred_at", "day_n")


def csv_body(*rows: dict[str, str]) -> str:
    """A CSV body with every column; cells not given are empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([row.get(name, "") for name in CSV_COLUMNS])
    return out.getvalue()


# Cells the CSV fast path reads itself (plain forms) and cells it leaves to pydantic's lax
# parsing (spaces, exponents, underscores, signs, other digits, out of range, …)
@pytest.mark.parametrize(
    "cells",
    [
        {"type": "revenue", "value": "12.5"},
        {"type": "revenue", "value": "-0"},
        {"type": "revenue", "value": "007.50"},
        {"type": "revenue", "value": "1000000000000"},
        {"type": "revenue", "value": "-1000000000000.5"},
        {"type": "revenue", "value": " 12"},
        {"type": "revenue", "value": "1e3"},
        {"type": "revenue", "value": "1_000"},
        {"type": "revenue", "value": ".5"},
        {"type": "revenue", "value": "+1"},
        {"type": "revenue", "value": "nan"},
        {"type": "revenue", "value": "-inf"},
        {"type": "revenue", "value": "0x10"},
        {"type": "revenue", "value": "\uff11\uff12"},  # full-width digits
        {"type": "revenue", "value": "1" * 400},
        {"type": "revenue"},
        {"type": "complaint", "value": "1"},
        {"type": "retained", "day_n": "30"},
        {"type": "retained", "day_n": "030"},
        {"type": "retained", "day_n": "+30"},
        {"type": "retained", "day_n": "30.0"},
        {"type": "retained", "day_n": " 30"},
        {"type": "retained", "day_n": "3650"},
        {"type": "retained", "day_n": "3651"},
        {"type": "retained", "day_n": "-1"},
        {"type": "retained", "day_n": "\u0663"},  # an Arabic-Indic three
        {"type": "retained", "day_n": "9" * 5000},
        {"type": "delivered", "day_n": "5"},
        {"type": "Delivered"},
        {"type": "delivered "},
        {"experiment": f" {KEY}"},
        {"experiment": f"{KEY} "},
        {"experiment": f"-{KEY}"},
        {"experiment": ""},
        {"subscriber_id": " s-2 "},
        {"subscriber_id": "s-2\u00a0"},
        {"subscriber_id": "s-2\x1f"},
        {"subscriber_id": "bad\x07id"},
        {"subscriber_id": ""},
        {"subscriber_id": "s" * 65},
        {"occurred_at": (T0 + timedelta(days=2)).astimezone(timezone(timedelta(hours=8))).isoformat()},
        {"occurred_at": at(1).replace("Z", "+00:00")},
        {"occurred_at": at(1).replace("Z", "")},
        {"occurred_at": f" {at(1)}"},
        {"occurred_at": "1700000000"},
        {"occurred_at": "0001-01-01T00:00:00+01:00"},
        {"occurred_at": ""},
        {"decision_id": "d-1"},
        {"decision_id": "d-1", "experiment": "", "subscriber_id": ""},
    ],
)
def test_bulk_csv_cells_get_the_answer_of_a_single_outcome(app, db, exposed, cells):
    """Each CSV row is accepted or refused as ``OutcomeIn`` would, value for value and
    message for message, whichever path reads it."""
    row = {"experiment": KEY, "subscriber_id": "s-1", "type": "delivered", "occurred_at": at(1), **cells}
    expected: OutcomeIn | ValidationError
    try:
        expected = OutcomeIn.model_validate({name: cell for name, cell in row.items() if cell})
    except ValidationError as exc:
        expected = exc
    report = import_outcomes(
        get_database(app).sessionmaker,
        io.StringIO(csv_body(row)),
        "csv",
        batch_rows=10,
        max_listed_errors=10,
        actor="test",
        decision_exposures=decision_exposures,
    )
    if isinstance(expected, ValidationError):
        assert report.accepted == 0 and [e["line"] for e in report.rejected] == [2]
        error = report.rejected[0]["error"]
        for problem in expected.errors(include_url=False):
            assert problem["msg"].removeprefix("Value error, ") in error, (error, problem)
            assert ".".join(map(str, problem["loc"])) in error
    elif expected.decision_id is not None:
        assert report.accepted == 0 and "unknown decision id 'd-1'" in report.rejected[0]["error"]
    else:
        assert report.accepted == 1, report.rejected
        day_n = expected.day_n if expected.day_n is not None or expected.type != "retained" else 1
        assert stored(db) == [(expected.subscriber_id, expected.type, expected.value, day_n, expected.occurred_at)]


def test_bulk_resolves_subscriber_ids_that_look_like_array_syntax(client, auth, db, exposed):
    # The lookup quotes ids in one array literal; ids holding its separator or quotes must
    # come back as themselves
    awkward = ['x","y', '"', 'a\\"', '","', "{s-1}", 'NULL","s-1']
    for sid in awkward:
        r = client.post(f"/api/v1/experiments/{KEY}/exposures", json={"subscriber_id": sid}, headers=auth["sms"])
        assert r.status_code == 201, r.json
    db.execute(update(Exposure).values(first_exposed_at=T0))
    db.commit()
    r = bulk(
        client,
        auth["sms"],
        csv_body(
            *[{"experiment": KEY, "subscriber_id": sid, "type": "delivered", "occurred_at": at(1)} for sid in awkward]
        ),
        CSV,
    )
    assert r.status_code == 200 and r.json["accepted"] == len(awkward), r.json
    assert sorted(sid for sid, *_ in stored(db)) == sorted(awkward)


@pytest.mark.parametrize(
    "header, fragment",
    [
        ("experiment,subscriber_id,type,occurred_at,colour", "unknown column(s) colour"),
        ("experiment,subscriber_id,occurred_at", "no type column"),
        ("subscriber_id,type,occurred_at", "experiment and subscriber_id (or decision_id)"),
        ("experiment,subscriber_id,type,type,occurred_at", "repeated column(s) type"),
    ],
)
def test_bulk_csv_bad_header_is_400_and_writes_nothing(client, auth, db, exposed, header, fragment):
    r = bulk(client, auth["sms"], f"{header}\n{KEY},s-1,delivered,{at(1)},x\n", CSV)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_csv_header"
    assert fragment in r.json["error"]["message"]
    assert count(db) == 0


@pytest.mark.parametrize("body, content_type", [("", CSV), ("\n\n", JSONL), ("", JSONL)])
def test_bulk_empty_body_is_400(client, auth, exposed, body, content_type):
    r = bulk(client, auth["sms"], body, content_type)
    assert r.status_code == 400 and r.json["error"]["code"] == "empty_import"


def test_bulk_needs_csv_or_json_lines(client, auth, exposed):
    r = bulk(client, auth["sms"], jsonl(outcome()), {"Content-Type": "application/json"})
    assert r.status_code == 415 and "outcomes" in r.json["error"]["message"]
    r = bulk(client, auth["sms"], jsonl(outcome()), {"Content-Type": "text/csv; charset=latin-1"})
    assert r.status_code == 415


def test_bulk_over_the_size_limit_is_413(app, client, auth, db, exposed, monkeypatch):
    small = dataclasses.replace(app.config["CAREPILOT_SETTINGS"], max_import_bytes=1024)
    monkeypatch.setitem(app.config, "CAREPILOT_SETTINGS", small)
    r = bulk(client, auth["sms"], jsonl(*[outcome()] * 40), JSONL)
    assert r.status_code == 413 and r.json["error"]["code"] == "import_too_large"


def test_a_stream_past_the_limit_keeps_the_rows_before_it(app, db, exposed):
    from infra.bulk_import import LineReader

    body = jsonl(*[outcome(sid, kind) for sid in SUBSCRIBERS for kind in ("delivered", "accepted")]).encode()
    reader = LineReader(io.BytesIO(body), max_bytes=len(body) // 2, chunk_bytes=128, max_line_bytes=1024)
    with pytest.raises(PayloadTooLarge) as caught:
        import_outcomes(
            get_database(app).sessionmaker,
            reader,
            "jsonl",
            batch_rows=2,
            max_listed_errors=10,
            actor="test",
            decision_exposures=decision_exposures,
        )
    assert 0 < caught.value.details["accepted"] < 10
    assert count(db) == caught.value.details["accepted"]


def test_one_audit_row_per_import_with_counts(client, auth, db, exposed):
    r = bulk(client, auth["marketing"], jsonl(outcome(), outcome("stranger")), JSONL)
    audit = db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "outcomes")).all()
    assert len(audit) == 1 and audit[0].entity_key == r.json["import_id"] and audit[0].action == "import"
    assert audit[0].after["accepted"] == 1 and audit[0].after["rejected_count"] == 1
    assert audit[0].actor.startswith("user:marketing")


def test_import_outcomes_command_shows_the_report(app, db, redis, exposed, tmp_path):
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "experiment,subscriber_id,type,value,occurred_at\n"
        f"{KEY},s-1,revenue,12,{at(2)}\n{KEY},stranger,revenue,3,{at(2)}\n"
    )
    r = app.test_cli_runner().invoke(args=["import-outcomes", str(path)])
    assert r.exit_code == 0, r.output
    assert "accepted 1, rejected 1" in r.output and "line 3: subscriber 'stranger'" in r.output
    assert stored(db) == [("s-1", "revenue", 12.0, None, T0 + timedelta(days=2))]
