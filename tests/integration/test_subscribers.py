"""Subscriber profiles: single upsert, streamed bulk import, re-tiering (HTTP + services)."""

from __future__ import annotations

import dataclasses
import io
import json

import flask
import psycopg
import pytest
from sqlalchemy import func, select

from infra.audit import AuditEntry
from infra.bulk_import import LineReader
from infra.db import get_database
from infra.errors import PayloadTooLarge
from offers.models import Subscriber
from offers.repository import load_tier_assigner
from offers.subscriber_attributes import ProfileError
from offers.subscriber_import import import_subscribers
from offers.subscribers_service import retier_all, upsert_profiles

BASE = "/api/v1/subscribers"
CSV = {"Content-Type": "text/csv"}
JSONL = {"Content-Type": "application/x-ndjson"}


@pytest.fixture()
def tiers(client, auth):
    """Two schemes: primary "value" (vip ≥ 90, value ≥ 50, basic) and "risk" (at-risk, steady)."""

    def post(path: str, body: dict) -> None:
        response = client.post(f"/api/v1/{path}", json=body, headers=auth["marketing"])
        assert response.status_code == 201, response.json

    post("tier-schemes", {"code": "value", "name": "Value tiers", "is_primary": True})
    post("tier-schemes", {"code": "risk", "name": "Risk"})
    post("tiers", {"code": "vip", "scheme_code": "value", "name": "VIP", "rank": 1, "rule": {"arpu": {"$gte": 90}}})
    post("tiers", {"code": "value", "scheme_code": "value", "name": "Value", "rank": 2, "rule": {"arpu": {"$gte": 50}}})
    post("tiers", {"code": "basic", "scheme_code": "value", "name": "Basic", "rank": 3, "rule": {}})
    post(
        "tiers",
        {
            "code": "at-risk",
            "scheme_code": "risk",
            "name": "At risk",
            "rank": 1,
            "rule": {"churn_score": {"$gte": 0.5}},
        },
    )
    post("tiers", {"code": "steady", "scheme_code": "risk", "name": "Steady", "rank": 2, "rule": {}})


def put(client, headers, sid: str, attributes: dict):
    return client.put(f"{BASE}/{sid}", json={"attributes": attributes}, headers=headers)


def bulk(client, headers, body: bytes | str, content_type: dict):
    data = body.encode() if isinstance(body, str) else body
    return client.post(f"{BASE}/bulk", data=data, headers={**headers, **content_type})


def stored(db, sid: str) -> Subscriber | None:
    db.expire_all()
    return db.get(Subscriber, sid)


def stored_row(db, sid: str) -> Subscriber:
    """The stored subscriber ``sid``, which must exist."""
    subscriber = stored(db, sid)
    assert subscriber is not None, f"subscriber {sid!r} is not stored"
    return subscriber


def import_audits(db) -> list[AuditEntry]:
    db.expire_all()
    return list(db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "subscribers").order_by(AuditEntry.id)))


# --- PUT / GET --------------------------------------------------------------------------------


def test_put_creates_a_profile_with_its_tiers_and_get_reads_it_back(client, auth, tiers):
    r = put(
        client,
        auth["marketing"],
        "s-1",
        {"arpu": 60, "ltv": 900.5, "churn_score": 0.7, "tenure_months": 14, "region": "Wuhan"},
    )
    assert r.status_code == 201, r.json
    assert r.json["subscriber_id"] == "s-1"
    assert r.json["tier"] == "value"
    assert r.json["tiers"] == {"risk": "at-risk", "value": "value"}
    assert r.json["attributes"] == {
        "arpu": 60.0,
        "ltv": 900.5,
        "churn_score": 0.7,
        "tenure_months": 14,
        "region": "Wuhan",
    }
    assert (r.json["arpu"], r.json["ltv"]) == (60.0, 900.5)
    got = client.get(f"{BASE}/s-1", headers=auth["analyst"])
    assert got.status_code == 200
    assert got.json == r.json


def test_put_replaces_the_whole_profile_and_recomputes_tiers(client, auth, tiers):
    assert put(client, auth["admin"], "s-2", {"arpu": 20, "region": "Wuhan", "ltv": 100}).status_code == 201
    r = put(client, auth["admin"], "s-2", {"arpu": 95.5})
    assert r.status_code == 200
    assert r.json["attributes"] == {"arpu": 95.5}  # region and ltv are gone: PUT replaces
    assert (r.json["tier"], r.json["tiers"]["value"], r.json["ltv"]) == ("vip", "vip", None)


def test_channels_may_write_and_every_caller_may_read(client, auth, tiers):
    for channel in ("sms", "app", "call_centre", "retail"):
        assert put(client, auth[channel], f"c-{channel}", {"arpu": 10}).status_code == 201
    for caller in ("admin", "marketing", "analyst", "sms"):
        r = client.get(f"{BASE}/c-sms", headers=auth[caller])
        assert r.status_code == 200 and r.json["tier"] == "basic"


def test_profiles_need_authentication(client, auth):
    assert client.put(f"{BASE}/s-1", json={"attributes": {}}).status_code == 401
    assert client.get(f"{BASE}/s-1").status_code == 401
    r = client.post(f"{BASE}/bulk", data=b"subscriber_id\ns-1\n", headers=CSV)
    assert r.status_code == 401 and r.json["error"]["code"] == "authentication_required"
    assert client.get(f"{BASE}/s-1", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_analysts_cannot_write(client, auth, db):
    r = put(client, auth["analyst"], "s-1", {"arpu": 10})
    assert r.status_code == 403 and r.json["error"]["code"] == "role_forbidden"
    assert bulk(client, auth["analyst"], "subscriber_id\ns-1\n", CSV).status_code == 403
    assert stored(db, "s-1") is None


def test_unknown_profile_is_404(client, auth):
    r = client.get(f"{BASE}/nobody", headers=auth["analyst"])
    assert r.status_code == 404 and r.json["error"]["code"] == "subscriber_not_found"


def test_put_without_tiers_configured_stores_no_tier(client, auth):
    r = put(client, auth["sms"], "s-1", {"arpu": 10})
    assert r.status_code == 201 and r.json["tier"] is None and r.json["tiers"] == {}


def test_put_rejects_malformed_json(client, auth, db):
    r = client.put(
        f"{BASE}/s-1", data=b'{"attributes": {', headers={**auth["admin"], "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"
    r = client.put(f"{BASE}/s-1", data=b'{"attributes": {}}', headers={**auth["admin"], "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert stored(db, "s-1") is None


@pytest.mark.parametrize(
    ("attributes", "path"),
    [
        ({"arpu": "12"}, "$.attributes.arpu"),
        ({"arpu": True}, "$.attributes.arpu"),
        ({"tenure_months": 2.5}, "$.attributes.tenure_months"),
        ({"has_broadband": 1}, "$.attributes.has_broadband"),
        ({"lifecycle_stage": "retired"}, "$.attributes.lifecycle_stage"),
        ({"birthday": "1990-02-30"}, "$.attributes.birthday"),
        ({"join_date": "last week"}, "$.attributes.join_date"),
        ({"churn_score": 1.2}, "$.attributes.churn_score"),
        ({"extra": {"nested": True}}, "$.attributes.extra"),
        ({"tier": "vip"}, "$.attributes.tier"),
        ({"is_birthday_today": True}, "$.attributes.is_birthday_today"),
    ],
)
def test_put_rejects_wrong_types_with_the_attribute_path(client, auth, db, attributes, path):
    r = put(client, auth["marketing"], "s-1", attributes)
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == "invalid_attributes"
    assert r.json["error"]["details"][0]["path"] == path
    assert stored(db, "s-1") is None


@pytest.mark.parametrize(
    "body",
    [
        {"attributes": {}, "tier": "vip"},  # unknown field
        {"attrs": {"arpu": 1}},
        {},
        {"attributes": [1, 2]},
        {"attributes": "arpu=1"},
    ],
)
def test_put_rejects_bodies_that_are_not_a_profile(client, auth, db, body):
    r = client.put(f"{BASE}/s-1", json=body, headers=auth["admin"])
    assert r.status_code == 400 and r.json["error"]["code"] == "validation_error"
    assert stored(db, "s-1") is None


def test_put_rejects_an_over_long_id(client, auth):
    r = put(client, auth["admin"], "x" * 65, {"arpu": 1})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_subscriber_id"


# --- bulk CSV ---------------------------------------------------------------------------------


def test_bulk_csv_keeps_good_rows_and_reports_bad_ones_by_line(client, auth, db, tiers):
    body = (
        "subscriber_id,arpu,tenure_months,has_broadband,lifecycle_stage,birthday,region\r\n"  # 1
        "a-1,95,40,yes,maturity,1980-05-01,Wuhan\r\n"  # 2 good
        "a-2,abc,3,no,growth,,Chengdu\r\n"  # 3 arpu
        "a-3,10,2\r\n"  # 4 columns
        ",10,2,no,growth,,x\r\n"  # 5 no id
        "a-5,10,2,no,retired,,x\r\n"  # 6 stage
        "\r\n"  # 7 blank
        "a-6,10,2,no,growth,1990-02-30,x\r\n"  # 8 date
        f"{'z' * 65},10,2,no,growth,,x\r\n"  # 9 long id
        "a-8,55.5,,,,,\r\n"  # 10 good
        '"a-9",12,1,true,onboarding,02-29,"Xi\'an, ""old town"""\r\n'
    )  # 11 good
    r = bulk(client, auth["marketing"], body, CSV)
    assert r.status_code == 200, r.json
    assert r.json["accepted"] == 3
    assert r.json["rejected_count"] == 6 and r.json["rejected_truncated"] is False
    errors = {e["line"]: e["error"] for e in r.json["rejected"]}
    assert sorted(errors) == [3, 4, 5, 6, 8, 9]
    assert errors[3].startswith("arpu: must be a number")
    assert errors[4] == "expected 7 columns as in the header, got 3"
    assert errors[5] == "subscriber_id is missing or empty"
    assert errors[6].startswith("lifecycle_stage: must be one of")
    assert errors[8].startswith("birthday: is not a real calendar date")
    assert errors[9] == "subscriber_id is longer than 64 characters"

    a1 = client.get(f"{BASE}/a-1", headers=auth["analyst"]).json
    assert a1["attributes"] == {
        "arpu": 95.0,
        "tenure_months": 40,
        "has_broadband": True,
        "lifecycle_stage": "maturity",
        "birthday": "1980-05-01",
        "region": "Wuhan",
    }
    assert (a1["tier"], a1["tiers"]) == ("vip", {"risk": "steady", "value": "vip"})
    a8 = client.get(f"{BASE}/a-8", headers=auth["analyst"]).json
    assert a8["attributes"] == {"arpu": 55.5} and a8["tier"] == "value"  # empty cells are absent
    a9 = client.get(f"{BASE}/a-9", headers=auth["analyst"]).json
    assert a9["attributes"]["region"] == 'Xi\'an, "old town"' and a9["attributes"]["birthday"] == "02-29"
    for bad in ("a-2", "a-3", "a-5", "a-6"):
        assert client.get(f"{BASE}/{bad}", headers=auth["analyst"]).status_code == 404


def test_bulk_csv_reports_invalid_utf8_and_broken_quotes(client, auth, db):
    body = (
        b"subscriber_id,arpu\n"
        b"u-1,10\n"
        b"u-\xff\xfe,11\n"  # 3: not UTF-8
        b"u-3,12\n"
        b'u-4,"1"2\n'  # 5: text after a closing quote
        b"u-5,13\n"
    )
    r = bulk(client, auth["admin"], body, CSV)
    assert r.status_code == 200, r.json
    assert r.json["accepted"] == 3
    assert [(e["line"], e["error"]) for e in r.json["rejected"]] == [
        (3, "line is not valid UTF-8 text"),
        (5, "invalid CSV: ',' expected after '\"'"),
    ]
    assert {sid for sid in ("u-1", "u-3", "u-5") if stored(db, sid) is not None} == {"u-1", "u-3", "u-5"}


def test_bulk_csv_header_with_bom_and_subscriber_id_anywhere(client, auth, db):
    r = bulk(client, auth["admin"], "\ufeffarpu,subscriber_id\n5,b-1\n".encode(), CSV)
    assert r.status_code == 200 and r.json["accepted"] == 1
    assert stored_row(db, "b-1").attributes == {"arpu": 5.0}


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("id,arpu", "the header row has no subscriber_id column"),
        ("subscriber_id,arpu,arpu", "repeated column(s) arpu"),
        ("subscriber_id,,arpu", "column 2 has no name"),
        ("subscriber_id,tier", "tier cannot be stored as an attribute"),
    ],
)
def test_bulk_csv_bad_header_is_400_and_writes_nothing(client, auth, db, header, fragment):
    r = bulk(client, auth["admin"], f"{header}\nh-1,1\n", CSV)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_csv_header"
    assert fragment in r.json["error"]["message"]
    assert stored(db, "h-1") is None and import_audits(db) == []


# --- bulk JSON lines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson", "application/jsonl", "application/x-ndjson; charset=utf-8"]
)
def test_bulk_jsonl_keeps_good_rows_and_reports_bad_ones_by_line(client, auth, db, tiers, content_type):
    lines = [
        json.dumps({"subscriber_id": "j-1", "arpu": 70, "churn_score": 0.9, "segments": ["a", "b"]}),  # 1
        '{"subscriber_id": "j-2", "arpu": ',  # 2
        "[1, 2]",  # 3
        json.dumps({"arpu": 5}),  # 4
        json.dumps({"subscriber_id": 7, "arpu": 5}),  # 5
        json.dumps({"subscriber_id": "j-6", "arpu": "12"}),  # 6
        '{"subscriber_id": "j-7", "arpu": NaN}',  # 7
        "",  # 8
        json.dumps({"subscriber_id": "j-9", "tenure_months": 3, "has_broadband": False}),  # 9
        json.dumps({"subscriber_id": "j-10", "profile": {"x": 1}}),  # 10
    ]
    r = bulk(client, auth["sms"], "\n".join(lines) + "\n", {"Content-Type": content_type})
    assert r.status_code == 200, r.json
    assert r.json["accepted"] == 2 and r.json["rejected_count"] == 7
    errors = {e["line"]: e["error"] for e in r.json["rejected"]}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 10]
    assert errors[2].startswith("invalid JSON")
    assert errors[3].startswith("each line must be a JSON object")
    assert errors[4] == "subscriber_id must be text"
    assert errors[5] == "subscriber_id must be text, got 7"
    assert errors[6].startswith("arpu: must be a number (not text)")
    assert "NaN" in errors[7]
    assert errors[10].startswith("profile: profiles are flat")
    j1 = client.get(f"{BASE}/j-1", headers=auth["analyst"]).json
    assert j1["attributes"] == {"arpu": 70.0, "churn_score": 0.9, "segments": ["a", "b"]}
    assert j1["tiers"] == {"risk": "at-risk", "value": "value"}
    assert stored_row(db, "j-9").attributes == {"tenure_months": 3, "has_broadband": False}
    assert stored(db, "j-6") is None


def test_duplicate_ids_in_one_file_last_row_wins(client, auth, db, tiers):
    r = bulk(client, auth["admin"], "subscriber_id,arpu,region\nd-1,95,north\nd-2,1,x\nd-1,20,south\n", CSV)
    assert r.json["accepted"] == 3
    assert stored_row(db, "d-1").attributes == {"arpu": 20.0, "region": "south"}
    assert stored_row(db, "d-1").tier == "basic"
    lines = [{"subscriber_id": "d-3", "arpu": 1}, {"subscriber_id": "d-3", "arpu": 99}]
    bulk(client, auth["admin"], "\n".join(json.dumps(x) for x in lines), JSONL)
    assert stored_row(db, "d-3").tier == "vip"


def test_duplicates_across_batches_last_row_wins(app, db, tiers):
    rows = "subscriber_id,arpu\n" + "".join(f"x-{i % 3},{i}\n" for i in range(10))
    report = import_subscribers(
        get_database(app).sessionmaker, io.StringIO(rows), "csv", batch_rows=2, max_listed_errors=10, actor="test"
    )
    assert (report.accepted, report.batches) == (10, 5)
    assert [stored_row(db, f"x-{i}").attributes["arpu"] for i in range(3)] == [9.0, 7.0, 8.0]


def test_reimport_replaces_attributes_and_retiers(client, auth, db, tiers):
    bulk(client, auth["admin"], "subscriber_id,arpu,churn_score,region\nr-1,95,0.9,north\n", CSV)
    first = stored_row(db, "r-1")
    assert (first.tier, first.tiers["risk"], first.arpu) == ("vip", "at-risk", 95.0)
    bulk(client, auth["admin"], "subscriber_id,arpu,ltv\nr-1,51,700\n", CSV)
    second = stored_row(db, "r-1")
    assert second.attributes == {"arpu": 51.0, "ltv": 700.0}
    assert (second.tier, second.tiers) == ("value", {"risk": "steady", "value": "value"})
    assert (second.arpu, second.ltv) == (51.0, 700.0)


def test_one_audit_row_per_import_with_counts(client, auth, db):
    body = "subscriber_id,arpu\n" + "".join(f"a-{i},{i}\n" for i in range(25)) + "bad,x\n"
    r = bulk(client, auth["marketing"], body, CSV)
    assert r.status_code == 200
    audits = import_audits(db)
    assert len(audits) == 1
    entry = audits[0]
    assert (entry.action, entry.entity_type) == ("import", "subscribers")
    assert entry.entity_key == r.json["import_id"]
    assert entry.actor == "user:marketing@example.test"
    assert entry.after["accepted"] == 25 and entry.after["rejected_count"] == 1
    assert entry.after["format"] == "csv" and entry.after["bytes_read"] == len(body)
    assert "rows" not in entry.after and entry.before is None


# --- bulk: refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "multipart/form-data", "text/csv; charset=latin-1"]
)
def test_bulk_unsupported_content_type_is_415(client, auth, db, content_type):
    r = bulk(client, auth["admin"], "subscriber_id\ns-1\n", {"Content-Type": content_type})
    assert r.status_code == 415 and r.json["error"]["code"] == "unsupported_media_type"
    assert stored(db, "s-1") is None


def test_bulk_without_content_type_is_415(client, auth):
    r = client.post(f"{BASE}/bulk", data=b"subscriber_id\ns-1\n", headers=auth["admin"])
    assert r.status_code == 415


@pytest.mark.parametrize("content_type", [CSV, JSONL])
@pytest.mark.parametrize("body", [b"", b"\n\n  \r\n"])
def test_bulk_empty_body_is_400(client, auth, db, content_type, body):
    r = bulk(client, auth["admin"], body, content_type)
    assert r.status_code == 400 and r.json["error"]["code"] == "empty_import"
    assert "empty" in r.json["error"]["message"]
    assert import_audits(db) == []


def test_bulk_header_only_csv_imports_nothing(client, auth, db):
    r = bulk(client, auth["admin"], "subscriber_id,arpu\n", CSV)
    assert r.status_code == 200 and r.json["accepted"] == 0 and r.json["rejected"] == []


def test_bulk_over_the_size_limit_is_413(app, client, auth, db, monkeypatch):
    small = dataclasses.replace(app.config["CAREPILOT_SETTINGS"], max_import_bytes=1024)
    monkeypatch.setitem(app.config, "CAREPILOT_SETTINGS", small)
    r = bulk(client, auth["admin"], "subscriber_id\n" + "s-1\n" * 300, CSV)
    assert r.status_code == 413 and r.json["error"]["code"] == "import_too_large"
    assert stored(db, "s-1") is None


def test_a_stream_that_passes_the_limit_keeps_the_rows_before_it(app, db):
    body = ("subscriber_id,arpu\n" + "".join(f"t-{i:03d},{i}\n" for i in range(200))).encode()
    reader = LineReader(io.BytesIO(body), max_bytes=1500, chunk_bytes=256, max_line_bytes=256)
    with pytest.raises(PayloadTooLarge) as caught:
        import_subscribers(
            get_database(app).sessionmaker, reader, "csv", batch_rows=10, max_listed_errors=10, actor="test"
        )
    accepted = caught.value.details["accepted"]
    assert 0 < accepted < 200
    assert stored(db, "t-000") is not None and stored(db, "t-199") is None
    audits = import_audits(db)
    assert len(audits) == 1 and audits[0].after["accepted"] == accepted
    assert audits[0].after["stopped"] == "the upload is larger than 1500 bytes"


def test_the_bulk_endpoint_streams_the_body(client, auth, db, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the import must read request.stream, not the whole body")

    monkeypatch.setattr(flask.Request, "get_data", refuse)
    r = bulk(client, auth["admin"], "subscriber_id,arpu\ns-1,1\n", CSV)
    assert r.status_code == 200 and r.json["accepted"] == 1


def test_the_rejected_list_is_capped_but_every_bad_row_is_counted(app, db):
    rows = "subscriber_id,arpu\n" + "".join(f"c-{i},bad\n" for i in range(5)) + "c-ok,1\n"
    report = import_subscribers(
        get_database(app).sessionmaker, io.StringIO(rows), "csv", batch_rows=100, max_listed_errors=2, actor="test"
    )
    body = report.as_json()
    assert (body["accepted"], body["rejected_count"], body["rejected_truncated"]) == (1, 5, True)
    assert [e["line"] for e in body["rejected"]] == [2, 3]


# --- LineReader -------------------------------------------------------------------------------


def read_lines(data: bytes, **kwargs) -> tuple[list[str], dict[int, str]]:
    reader = LineReader(io.BytesIO(data), max_bytes=10**9, **kwargs)
    return list(reader), reader.bad_lines


def test_line_reader_splits_lines_across_chunks():
    data = b"".join(b"line-%d,\xe4\xb8\xad\r\n" % i for i in range(50)) + b"last"
    lines, bad = read_lines(data, chunk_bytes=7, max_line_bytes=64)
    assert lines == [f"line-{i},\u4e2d\r\n" for i in range(50)] + ["last"] and bad == {}


def test_line_reader_reports_bad_lines_in_place():
    lines, bad = read_lines(b"a\n" + b"x" * 40 + b"\nb\n\xff\nc", chunk_bytes=8, max_line_bytes=16)
    assert lines == ["a\n", "\n", "b\n", "\n", "c"]
    assert bad == {2: "line is longer than 16 bytes", 4: "line is not valid UTF-8 text"}


# --- services ---------------------------------------------------------------------------------


def test_upsert_profiles_validates_and_dedupes(db, tiers):
    assigner = load_tier_assigner(db)
    assert upsert_profiles(db, [("u-1", {"arpu": 10}), ("u-2", {"arpu": 60}), ("u-1", {"arpu": 99})], assigner) == 2
    assert stored_row(db, "u-1").tier == "vip" and stored_row(db, "u-2").tier == "value"
    with pytest.raises(ProfileError, match="subscriber 'u-3': arpu: must be a number"):
        upsert_profiles(db, [("u-3", {"arpu": "10"})], assigner)


def test_retier_all_follows_changed_tier_rules(app, client, auth, db, tiers):
    body = "subscriber_id,arpu\n" + "".join(f"t-{i:02d},{40 + i}\n" for i in range(20))  # arpu 40..59
    assert bulk(client, auth["admin"], body, CSV).json["accepted"] == 20
    counts = dict(db.execute(select(Subscriber.tier, func.count()).group_by(Subscriber.tier)).all())
    assert counts == {"basic": 10, "value": 10}
    factory = get_database(app).sessionmaker
    assert retier_all(factory, batch_rows=7) == {
        "scanned": 20,
        "changed": 0,
        "by_tier": {"basic": 10, "value": 10},
        "untiered": 0,
    }

    r = client.patch("/api/v1/tiers/value", json={"rule": {"arpu": {"$gte": 55}}}, headers=auth["marketing"])
    assert r.status_code == 200, r.json
    result = retier_all(factory, batch_rows=7)
    assert result == {"scanned": 20, "changed": 5, "by_tier": {"basic": 15, "value": 5}, "untiered": 0}
    assert stored_row(db, "t-14").tier == "basic" and stored_row(db, "t-15").tier == "value"
    assert stored_row(db, "t-14").tiers == {"risk": "steady", "value": "basic"}
    assert retier_all(factory)["changed"] == 0  # a second run finds nothing to do


def test_an_upload_that_breaks_off_keeps_and_audits_the_committed_batches(app, db):
    def upload():  # the client goes away after 10 rows
        yield "subscriber_id,arpu\n"
        for i in range(10):
            yield f"k-{i},{i}\n"
        raise OSError("connection reset by peer")

    with pytest.raises(OSError):
        import_subscribers(
            get_database(app).sessionmaker, upload(), "csv", batch_rows=4, max_listed_errors=10, actor="test"
        )
    assert [stored(db, f"k-{i}") is not None for i in range(10)] == [True] * 8 + [False] * 2
    audits = import_audits(db)
    assert len(audits) == 1
    assert audits[0].after["written"] == 8 and audits[0].after["stopped"] == "failed: OSError"


def test_a_failing_batch_write_is_rolled_back_and_raised(app, db, monkeypatch):
    import offers.subscriber_writing as subscriber_writing

    if db.get_bind().dialect.name == "postgresql":
        monkeypatch.setattr(subscriber_writing, "_UPSERT_BATCH", b"SELECT 1 / 0 WHERE $1::text <> $2::text")
        expected: type[Exception] = psycopg.errors.DivisionByZero
    else:

        def broken(*args, **kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(subscriber_writing, "write_profiles", broken)
        expected = RuntimeError
    with pytest.raises(expected):
        import_subscribers(
            get_database(app).sessionmaker,
            io.StringIO("subscriber_id\nf-1\nf-2\n"),
            "csv",
            batch_rows=1,
            max_listed_errors=10,
            actor="test",
        )
    assert stored(db, "f-1") is None and stored(db, "f-2") is None
    assert db.scalar(select(func.count()).select_from(Subscriber)) == 0  # the connection still works
    assert import_audits(db) == []  # nothing was committed, so there is nothing to audit
