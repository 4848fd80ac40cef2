"""Background jobs end to end on real Redis: HTTP enqueue → RQ worker (burst) → database."""

from __future__ import annotations

import time

from infra.db import get_database
from infra.job_runtime import bind_job_database
from infra.queues import InProcessQueueWorker, get_queue, run_queued_jobs_here
from offers.models import Subscriber


def _tiers(client, auth):  # a scheme whose single rule we can change
    client.post("/api/v1/tier-schemes", json={"code": "v", "name": "V", "is_primary": True}, headers=auth["admin"])
    client.post(
        "/api/v1/tiers",
        json={"code": "vip", "scheme_code": "v", "name": "VIP", "rank": 1, "rule": {"arpu": {"$gte": 100}}},
        headers=auth["admin"],
    )
    client.post(
        "/api/v1/tiers",
        json={"code": "basic", "scheme_code": "v", "name": "Basic", "rank": 2, "rule": {}},
        headers=auth["admin"],
    )


def test_retier_job_runs_once_in_a_worker_and_updates_tiers(app, client, auth, db, redis):
    _tiers(client, auth)
    for sid, arpu in (("s1", 150.0), ("s2", 80.0)):
        r = client.put(f"/api/v1/subscribers/{sid}", json={"attributes": {"arpu": arpu}}, headers=auth["sms"])
        assert r.status_code in (200, 201), r.json
    assert db.get(Subscriber, "s2").tier == "basic"
    client.patch("/api/v1/tiers/vip", json={"rule": {"arpu": {"$gte": 50}}}, headers=auth["marketing"])

    first = client.post("/api/v1/subscribers/retier", headers=auth["marketing"])
    second = client.post("/api/v1/subscribers/retier", headers=auth["marketing"])
    assert first.status_code == second.status_code == 202
    assert first.json["created"] is True and second.json["created"] is False
    assert get_queue(redis).count == 1

    bind_job_database(get_database(app))
    run_queued_jobs_here(redis)

    job_id = first.json["job"]["id"]
    status = client.get(f"/api/v1/jobs/{job_id}", headers=auth["analyst"]).json
    assert status["status"] == "finished", status
    assert status["result"]["changed"] == 1
    db.expire_all()
    assert db.get(Subscriber, "s2").tier == "vip"


def test_unknown_or_malformed_job_ids_are_404(client, auth):
    assert client.get("/api/v1/jobs/nope", headers=auth["analyst"]).status_code == 404
    assert client.get("/api/v1/jobs/a.b", headers=auth["analyst"]).status_code == 404


def test_retier_needs_a_config_writer(client, auth):
    assert client.post("/api/v1/subscribers/retier", headers=auth["analyst"]).status_code == 403


def test_a_worker_stops_listening_at_once_when_its_listener_reads_the_unsubscribe_reply_first(redis):
    """rq's own order (unsubscribe, then stop) leaves a listener that read the reply first
    waiting 60 s for a new subscription; the worker's exit waited with it."""
    worker = InProcessQueueWorker(["default"], connection=redis)
    worker.subscribe()
    pubsub, listener = worker.pubsub, worker.pubsub_thread
    assert pubsub is not None and listener is not None
    send_unsubscribe = pubsub.unsubscribe

    def unsubscribe_and_let_the_listener_read_the_reply(*channels):
        send_unsubscribe(*channels)
        deadline = time.monotonic() + 5
        while pubsub.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the listener has looped back by now

    pubsub.unsubscribe = unsubscribe_and_let_the_listener_read_the_reply  # the race, forced
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 5
    assert not listener.is_alive()
