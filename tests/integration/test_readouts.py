"""Readouts end to end: HTTP enqueue → RQ worker (burst) on real Redis → readout row → API;
promotion (auto and approved), the ROI alarm, rollout exposures, degenerate data, errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from experiments.exposures import expose
from experiments.jobs import enqueue_readout, readout_job_id, run_readout
from experiments.models import Alert, Experiment, ExperimentPhase, Promotion, Readout
from experiments.readouts import readout_cutoff
from infra.audit import AuditEntry
from infra.config_version import read_version
from infra.db import get_database, utcnow
from infra.job_runtime import bind_job_database
from infra.queues import get_queue, run_queued_jobs_here
from tests.integration.readout_data import KEY, Cell, populate, start_pilot, winning_cells

pytestmark = pytest.mark.heavy

URL = f"/api/v1/experiments/{KEY}"


def _burst(app, redis) -> None:
    bind_job_database(get_database(app))
    run_queued_jobs_here(redis)


def _count(db, model, experiment) -> int:
    return db.scalar(select(func.count()).select_from(model).where(model.experiment_id == experiment.id))


def test_a_readout_runs_once_in_a_worker_and_is_served_in_the_design_shape(app, client, auth, db, redis):
    experiment = start_pilot(
        client, auth, db, promotion_policy={"min_exposures_per_arm": 100, "min_runtime_days": 30, "mode": "approve"}
    )
    populate(db, experiment, winning_cells(), now=utcnow())

    r = client.post(f"{URL}/readouts", headers=auth["marketing"])
    assert r.status_code == 202, r.json
    job_id = r.json["job"]["id"]
    cutoff = utcnow().replace(microsecond=0)
    again = enqueue_readout(redis, KEY, readout_cutoff(cutoff, 60))  # a scheduler's request
    assert again[1] is True  # another cutoff: its own job
    assert get_queue(redis, "readouts").count == 2
    _burst(app, redis)

    status = client.get(f"/api/v1/jobs/{job_id}", headers=auth["analyst"]).json
    assert status["status"] == "finished", status
    assert status["meta"]["stage"] == "done" and status["meta"]["progress"] == 1.0
    readout = client.get(f"{URL}/readout", headers=auth["analyst"]).json
    for field in ("experiment", "status", "computed_at", "data_cutoff", "method", "srm", "arms", "tiers", "promotion"):
        assert field in readout, field
    arms = {arm["key"]: arm for arm in readout["arms"]}
    assert arms["control"]["is_control"] and arms["control"]["exposed"] == 3000
    assert 0.80 < arms["control"]["retention_mean"] < 0.86 < arms["credit"]["retention_mean"] < 0.95
    assert arms["credit"]["p_beats_control"] > 0.999 and arms["credit"]["p_best"] > 0.99
    lo, hi = arms["credit"]["uplift_vs_control"]["ci95"]
    assert 0.03 < lo < arms["credit"]["uplift_vs_control"]["mean"] < hi < 0.15
    assert arms["credit"]["p_roi_above_floor"] > 0.99
    assert {tier["tier"] for tier in readout["tiers"]} == {"basic", "vip"}
    assert readout["srm"]["flag"] is False
    assert readout["promotion"] == {**readout["promotion"], "eligible": True, "winner": "credit", "blocked_by": []}
    assert readout["method"] in ("hierarchical", "conjugate")
    if readout["method"] == "conjugate":  # the model ran but its diagnostics failed: it says why
        assert readout["hierarchical"]["reason"]

    # mode "approve": eligible but not promoted until a person approves
    db.expire_all()
    assert db.get(Experiment, experiment.id).status == "pilot"
    history = client.get(f"{URL}/readouts", headers=auth["analyst"]).json["items"]
    assert len(history) == 2 and all(item["eligible"] for item in history)

    csv_body = client.get(f"{URL}/readout.csv", headers=auth["analyst"])
    assert csv_body.status_code == 200 and csv_body.mimetype == "text/csv"
    lines = csv_body.get_data(as_text=True).splitlines()
    assert lines[0].startswith("tier,arm,is_control") and len(lines) == 1 + 2 + 2 * 2


def test_the_same_readout_enqueued_twice_runs_once(app, client, auth, db, redis):
    experiment = start_pilot(client, auth, db)
    populate(db, experiment, winning_cells(300), now=utcnow())
    cutoff = readout_cutoff(utcnow(), 60)
    first, created = enqueue_readout(redis, KEY, cutoff)
    second, created_again = enqueue_readout(redis, KEY, cutoff)
    assert created and not created_again and first.id == second.id == readout_job_id(KEY, cutoff)
    assert get_queue(redis, "readouts").count == 1
    _burst(app, redis)
    assert _count(db, Readout, experiment) == 1
    # run again by hand (a retry after a crash): nothing new, nothing promoted twice
    summary = run_readout(get_database(app).sessionmaker, KEY, cutoff)
    assert summary["new"] is False
    assert _count(db, Readout, experiment) == 1 and _count(db, Promotion, experiment) <= 1


def test_auto_mode_promotes_the_winner_with_its_phase_promotion_and_audit_rows(app, client, auth, db, redis):
    experiment = start_pilot(client, auth, db)
    populate(db, experiment, winning_cells(), now=utcnow())
    cutoff = utcnow().replace(microsecond=0)
    summary = run_readout(get_database(app).sessionmaker, KEY, cutoff)
    assert summary["eligible"] and summary["promoted"], summary

    db.expire_all()
    experiment = db.get(Experiment, experiment.id)
    assert experiment.status == "rollout" and experiment.winner_arm_key == "credit"
    assert experiment.coverage == 1.0 and experiment.holdout_share == 0.05 and experiment.phase == 2
    phase = db.scalar(
        select(ExperimentPhase).where(ExperimentPhase.experiment_id == experiment.id, ExperimentPhase.phase == 2)
    )
    assert {w["arm"]: w["weight"] for w in phase.weights} == {"control": 0.0, "credit": 1.0}
    promotion = db.scalar(select(Promotion).where(Promotion.experiment_id == experiment.id))
    assert promotion.mode == "auto" and promotion.winner_arm_key == "credit"
    audit = db.scalar(select(AuditEntry).where(AuditEntry.action == "promote", AuditEntry.entity_key == KEY))
    assert audit.after["winner_arm_key"] == "credit"

    # new subscribers get the winner (or the kept holdout); the pilot's keep their arms
    arms = {expose(db, experiment, f"new-{i}", tier="basic", channel="sms", now=utcnow()).arm_key for i in range(400)}
    assert arms == {"credit", None}
    assert expose(db, experiment, "control-basic-0", tier="basic", channel="sms", now=utcnow()).arm_key == "control"

    # a later readout of the rollout judges it "not in pilot" and promotes nothing more; its
    # uplift is what arbitration now uses for the winner's offer, so the decisions' config moves
    version = read_version(redis)
    later = run_readout(get_database(app).sessionmaker, KEY, cutoff + timedelta(hours=1))
    assert later["promoted"] is False and "not_in_pilot" in later["blocked_by"]
    assert read_version(redis)[1] > version[1]
    # the rollout's exposures all go to the winner by design: SRM tests the pilot's split only
    srm = client.get(f"{URL}/readout", headers=auth["analyst"]).json["srm"]
    assert srm["flag"] is False and srm["observed"] == {"control": 3000, "credit": 3000}
    assert _count(db, Promotion, experiment) == 1


def test_approving_a_promotion_needs_an_eligible_latest_readout(app, client, auth, db, redis):
    experiment = start_pilot(
        client, auth, db, started_days_ago=10, promotion_policy={"min_exposures_per_arm": 100, "mode": "approve"}
    )
    populate(db, experiment, winning_cells(300), now=utcnow())
    assert client.post(f"{URL}/promotion", json={}, headers=auth["marketing"]).json["error"]["code"] == "no_readout"
    run_readout(get_database(app).sessionmaker, KEY, utcnow().replace(microsecond=0))
    blocked = client.post(f"{URL}/promotion", json={}, headers=auth["marketing"])
    assert blocked.status_code == 409 and blocked.json["error"]["code"] == "promotion_blocked"
    assert "min_runtime" in blocked.json["error"]["message"]

    r = client.patch(URL, json={"promotion_policy": {"min_runtime_days": 5}}, headers=auth["marketing"])
    assert r.status_code == 200, r.json
    readout_id = run_readout(
        get_database(app).sessionmaker, KEY, utcnow().replace(microsecond=0) + timedelta(seconds=1)
    )["readout_id"]
    assert client.post(f"{URL}/promotion", json={}, headers=auth["analyst"]).status_code == 403
    stale = client.post(f"{URL}/promotion", json={"readout_id": readout_id - 1}, headers=auth["marketing"])
    assert stale.status_code == 409 and stale.json["error"]["code"] == "stale_readout"
    ok = client.post(
        f"{URL}/promotion", json={"readout_id": readout_id, "reason": "clear win"}, headers=auth["marketing"]
    )
    assert ok.status_code == 201, ok.json
    assert ok.json["experiment"]["status"] == "rollout" and ok.json["promotion"]["mode"] == "approve"
    twice = client.post(f"{URL}/promotion", json={}, headers=auth["marketing"])
    assert twice.status_code == 409 and twice.json["error"]["code"] == "not_in_pilot"
    listing = client.get(f"{URL}/promotions", headers=auth["analyst"]).json
    assert len(listing["promotions"]) == 1 and listing["alerts"] == []


def test_the_roi_alarm_pauses_a_rollout_that_does_not_pay_and_a_person_resumes_it(app, client, auth, db, redis):
    experiment = start_pilot(client, auth, db)
    now = utcnow()
    populate(db, experiment, winning_cells(), now=now)
    assert run_readout(get_database(app).sessionmaker, KEY, now.replace(microsecond=0))["promoted"]
    # in rollout the credit backfires: far fewer of its new subscribers stay than the control's
    flat = [Cell("credit", "basic", 4000, 0.60), Cell("credit", "vip", 4000, 0.65)]
    populate(
        db,
        db.get(Experiment, experiment.id),
        [Cell(c.arm, c.tier + "2", c.n, c.retention) for c in flat],
        now=now,
        seed=11,
    )
    populate(
        db,
        db.get(Experiment, experiment.id),
        [Cell("control", "basic3", 6000, 0.80), Cell("control", "vip3", 6000, 0.85)],
        now=now,
        seed=12,
    )
    summary = run_readout(get_database(app).sessionmaker, KEY, now.replace(microsecond=0) + timedelta(hours=1))
    assert summary["alert"], summary
    db.expire_all()
    experiment = db.get(Experiment, experiment.id)
    assert experiment.spending_paused
    alert = db.scalar(select(Alert).where(Alert.experiment_id == experiment.id))
    assert alert.kind == "roi_alarm" and "credit" in alert.message
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "pause_spending")) is not None

    assert client.post(f"{URL}/resume-spending", json={}, headers=auth["marketing"]).status_code == 400
    r = client.post(f"{URL}/resume-spending", json={"reason": "new pricing"}, headers=auth["marketing"])
    assert r.status_code == 200 and r.json["spending_paused"] is False
    listing = client.get(f"{URL}/promotions", headers=auth["analyst"]).json
    assert listing["alerts"][0]["resolved_by"]
    again = client.post(f"{URL}/resume-spending", json={"reason": "x"}, headers=auth["marketing"])
    assert again.status_code == 409 and again.json["error"]["code"] == "not_paused"


def test_no_data_gives_a_readout_with_an_error_code_not_a_failure(app, client, auth, db, redis):
    start_pilot(client, auth, db)
    summary = run_readout(get_database(app).sessionmaker, KEY, utcnow().replace(microsecond=0))
    assert summary["new"] and not summary["eligible"]
    readout = client.get(f"{URL}/readout", headers=auth["analyst"]).json
    assert readout["error"] == "no_data"
    assert "readout_error" in readout["promotion"]["blocked_by"]
    assert "min_exposures_per_arm" in readout["promotion"]["blocked_by"]


def test_readout_errors_are_clear(client, auth, db, redis):
    start_pilot(client, auth, db)
    missing = client.get(f"{URL}/readout", headers=auth["analyst"])
    assert missing.status_code == 404 and missing.json["error"]["code"] == "no_readout"
    assert client.get(f"{URL}/readout?at=yesterday", headers=auth["analyst"]).status_code == 400
    assert client.get(f"{URL}/readout?at=2026-01-01T00:00:00", headers=auth["analyst"]).status_code == 400
    assert client.get(f"{URL}/readout?bogus=1", headers=auth["analyst"]).status_code == 400
    assert client.get("/api/v1/experiments/nope/readout", headers=auth["analyst"]).status_code == 404
    assert client.post(f"{URL}/readouts", headers=auth["analyst"]).status_code == 403
    assert client.get(f"{URL}/readout").status_code == 401


def test_readouts_as_of_a_time(app, client, auth, db, redis):
    experiment = start_pilot(client, auth, db)
    populate(db, experiment, winning_cells(200), now=utcnow())
    early = utcnow().replace(microsecond=0) - timedelta(days=2)
    run_readout(get_database(app).sessionmaker, KEY, early)
    run_readout(get_database(app).sessionmaker, KEY, early + timedelta(days=1))
    at = (early + timedelta(hours=1)).isoformat()
    r = client.get(f"{URL}/readout", query_string={"at": at}, headers=auth["analyst"])
    assert r.status_code == 200 and r.json["data_cutoff"] == early.isoformat()


def test_the_cron_tick_enqueues_each_due_readout_once_and_the_worker_runs_them(app, client, auth, db, redis):
    from carepilot.cron import MONTHLY_RETIER_CRON, build_cron
    from experiments.jobs import due_readouts, schedule_readouts_job

    experiment = start_pilot(client, auth, db)
    populate(db, experiment, winning_cells(200), now=utcnow())
    cron = build_cron(redis)
    registered = {job.func_name: job for job in cron.get_jobs()}
    assert registered["experiments.jobs.schedule_readouts_job"].interval == 60
    assert registered["experiments.jobs.monthly_retier_job"].cron == MONTHLY_RETIER_CRON

    assert [key for key, _ in due_readouts(get_database(app).sessionmaker, utcnow())] == [KEY]
    queue = get_queue(redis)
    queue.enqueue(schedule_readouts_job)
    queue.enqueue(schedule_readouts_job)  # a second scheduler on another host
    _burst(app, redis)
    assert _count(db, Readout, experiment) == 1


def test_the_cli_runs_one_readout_synchronously(app, client, auth, db, redis):
    import json

    experiment = start_pilot(client, auth, db)
    populate(db, experiment, winning_cells(200), now=utcnow())
    runner = app.test_cli_runner()
    r = runner.invoke(args=["readout", KEY, "--at", "2026-11-01T00:00:00Z"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert summary["new"] is True and summary["experiment"] == KEY
    assert _count(db, Readout, experiment) == 1
    again = runner.invoke(args=["readout", KEY, "--at", "2026-11-01T00:00:00Z"])
    assert again.exit_code == 0 and json.loads(again.stdout[again.stdout.index("{") :])["new"] is False
    assert runner.invoke(args=["readout", "nope"]).exit_code != 0
    assert runner.invoke(args=["readout", KEY, "--at", "yesterday"]).exit_code != 0
