"""The experiment and readout pages of the admin UI through Flask's test client: roles, CSRF,
no readout, a readout's tables and SVG charts, SRM, approving a promotion through the form
(eligible and not), running a readout now (and with Redis down), resuming spending; plus
the pure chart geometry behind the charts."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TypedDict

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import insert, select, update

from admin_ui import experiments_views
from admin_ui.charts import Interval, axis_domain, interval_chart, nice_step, shared_domain
from admin_ui.experiments_views import readout_view
from experiments.jobs import run_readout
from experiments.models import Experiment, Readout
from experiments.readouts import MODEL_VERSION
from infra.audit import AuditEntry
from infra.db import get_database, utcnow
from infra.job_runtime import bind_job_database
from infra.queues import get_queue, run_queued_jobs_here
from tests.integration.admin_forms import csrf_token, log_in_through_the_form, page_text
from tests.integration.readout_data import KEY, Cell, populate, start_pilot, winning_cells

PAGE = f"/admin/experiments/{KEY}"
READOUT_ID = re.compile(r'name="readout_id" value="(\d+)"')


def _readout_id(page: str) -> str:
    match = READOUT_ID.search(page)
    assert match, "no readout_id field on the page"
    return match.group(1)


def _table(body: str, testid: str) -> str:
    """The table with ``data-testid=testid``, from that attribute to its end."""
    start = body.index(f'data-testid="{testid}"')
    return body[start : body.index("</table>", start)]


@pytest.fixture()
def login(client, db, password):
    """login(role) → a fresh CSRF token of a user with ``role`` logged in through the form.
    (The ``auth`` fixture's users hold the default emails, so these get their own.)"""

    def do(role: str) -> str:
        log_in_through_the_form(client, db, role, password, email=f"{role}.ui@example.test")
        return csrf_token(client, "/admin/")

    return do


def _one_tier(n: int = 1500) -> list[Cell]:
    """A clear winner in a single tier: the hierarchical model is not attempted (fast)."""
    return [Cell("control", "basic", n, 0.80), Cell("credit", "basic", n, 0.90)]


def _pilot_with_readout(app, client, auth, db, *, cells=None, **overrides):
    experiment = start_pilot(client, auth, db, **overrides)
    populate(db, experiment, cells or _one_tier(), now=utcnow())
    db.commit()
    summary = run_readout(get_database(app).sessionmaker, KEY, utcnow().replace(microsecond=0))
    db.expire_all()
    return experiment, summary


def _status(db) -> str:
    db.expire_all()
    return db.scalar(select(Experiment.status).where(Experiment.key == KEY))


class _Overrides(TypedDict):
    """Fields of the experiment body that a test sets (``start_pilot``'s ``**overrides``)."""

    promotion_policy: dict[str, object]


APPROVE: _Overrides = {"promotion_policy": {"min_exposures_per_arm": 100, "min_runtime_days": 30, "mode": "approve"}}


# --- pages for every role -----------------------------------------------------------------------


def test_pages_need_a_login(client):
    for path in ("/admin/experiments", PAGE):
        r = client.get(path)
        assert r.status_code == 302 and r.headers["Location"].startswith("/admin/login?next=")


def test_list_and_page_without_a_readout(client, auth, db, login):
    start_pilot(client, auth, db)
    db.commit()
    login("analyst")
    listing = client.get("/admin/experiments")
    assert listing.status_code == 200
    body = page_text(listing)
    assert 'href="/admin/experiments"' in body and ">Experiments</a>" in body  # the nav link
    row = body[body.index(f'id="experiment-{KEY}"') :]
    row = row[: row.index("</tr>")]
    assert "Bill credit vs no care" in row and "pilot" in row and "50%" in row and "no readout yet" in row

    page = client.get(PAGE)
    assert page.status_code == 200
    body = page_text(page)
    assert 'data-testid="no-readout"' in body and "No readout yet." in body
    assert "<code>BILL_CREDIT_5</code>" in body and "no action" in body  # the arms
    assert 'data-testid="policy-table"' in body and "at least 100" in body
    assert "interval-chart" not in body and "Download CSV" not in body
    assert "Run readout now" not in body  # read-only for analysts


def test_a_readout_is_shown_as_tables_charts_tiers_and_a_verdict(app, client, auth, db, login):
    _, _summary = _pilot_with_readout(app, client, auth, db, cells=winning_cells(400), **APPROVE)
    login("analyst")
    api = client.get(f"/api/v1/experiments/{KEY}/readout").json  # the session authenticates GETs
    arms = {arm["key"]: arm for arm in api["arms"]}
    body = page_text(client.get(PAGE))

    table = _table(body, "arms-readout")
    credit = table[table.index('data-arm="credit"') :]
    credit = credit[: credit.index("</tr>")]
    mean, (low, high) = arms["credit"]["retention_mean"], arms["credit"]["retention_ci95"]
    assert f"{100 * mean:.1f}%" in credit and f"{100 * low:.1f}% to {100 * high:.1f}%" in credit
    uplift = arms["credit"]["uplift_vs_control"]
    assert f"{100 * uplift['mean']:+.1f} pp" in credit
    assert "> 0.999" in credit  # P(beats control) of a clear winner
    assert 'data-arm="control"' in table and "baseline" in table

    # the SVG chart: one row per arm, the control's mean as the reference line
    chart = body[body.index('data-testid="chart-all-arms"') :]
    chart = chart[: chart.index("</svg>")]
    assert '<svg class="interval-chart"' in chart and 'role="img"' in chart
    assert chart.count('<g class="arm') == 2 and 'class="reference"' in chart
    assert f"credit: {100 * mean:.1f}% (95% interval {100 * low:.1f}% to {100 * high:.1f}%)" in chart
    assert "style=" not in chart  # the CSP would block inline styles

    # per tier: small multiples with a shared axis, and compact tables
    assert 'data-tier="basic"' in body and 'data-tier="vip"' in body
    ticks = [
        re.findall(r'class="tick"[^>]*>([^<]+)<', body[body.index(f'data-testid="chart-tier-{t}"') :])[:3]
        for t in ("basic", "vip")
    ]
    assert ticks[0] == ticks[1]
    assert 'data-testid="tier-basic"' in body and 'data-testid="tier-vip"' in body
    source = "hierarchical model: partially pooled" if api["hierarchical"].get("ok") else "this tier's data alone"
    assert source in body[body.index('data-testid="tier-source-basic"') :]

    # verdict, method, SRM, CSV
    assert 'data-testid="srm-warning"' not in body
    verdict = body[body.index('data-testid="promotion-verdict"') :]
    if api["promotion"]["eligible"]:
        assert "Promotion: eligible — <code>credit</code> wins" in verdict
    else:  # the hierarchical model's diagnostics may block it: then the page says so
        assert api["promotion"]["blocked_by"] == ["diagnostics"], api["promotion"]
        assert "the hierarchical model did not converge" in verdict
    assert f'data-testid="readout-method">{api["method"]}<' in body
    if api["hierarchical"].get("attempted") and not api["hierarchical"].get("ok"):
        assert api["hierarchical"]["reason"] in body  # the fallback says why
    assert f'href="/api/v1/experiments/{KEY}/readout.csv"' in body
    csv = client.get(f"/api/v1/experiments/{KEY}/readout.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert "Approve promotion" not in body  # analysts see no forms

    listing = page_text(client.get("/admin/experiments"))
    assert (f'data-testid="eligible-{KEY}"' in listing) is api["promotion"]["eligible"]


def test_analysts_cannot_post_any_form(app, client, auth, db, login):
    _pilot_with_readout(app, client, auth, db, **APPROVE)
    db.execute(update(Experiment).where(Experiment.key == KEY).values(spending_paused=True))
    db.commit()
    token = login("analyst")
    body = page_text(client.get(PAGE))
    assert "Run readout now" not in body and "Approve promotion" not in body and "Resume spending" not in body
    for action, data in (("readouts", {}), ("promotion", {"reason": "x"}), ("resume-spending", {"reason": "x"})):
        r = client.post(f"{PAGE}/{action}", data={**data, "csrf_token": token})
        assert r.status_code == 403, action
        assert r.content_type.startswith("text/html") and "you are logged in as analyst" in page_text(r)
    assert _status(db) == "pilot"
    assert db.scalar(select(Experiment.spending_paused).where(Experiment.key == KEY)) is True


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_forms_without_the_csrf_token_change_nothing(app, client, auth, db, login, token):
    _pilot_with_readout(app, client, auth, db, **APPROVE)
    login("marketing")
    page = client.get(PAGE).get_data(as_text=True)
    data = {"readout_id": _readout_id(page)}
    if token:
        data["csrf_token"] = token
    r = client.post(f"{PAGE}/promotion", data=data)
    assert r.status_code == 400 and "form has expired" in page_text(r)
    assert _status(db) == "pilot"


def test_unknown_experiment_is_an_html_404(client, login):
    token = login("marketing")
    assert client.get("/admin/experiments/nope").status_code == 404
    r = client.post("/admin/experiments/nope/promotion", data={"csrf_token": token})
    assert r.status_code == 404 and r.content_type.startswith("text/html") and "no experiment" in page_text(r)


# --- approving a promotion ---------------------------------------------------------------------


def test_approving_through_the_form_rolls_the_winner_out(app, client, auth, db, login):
    _, summary = _pilot_with_readout(app, client, auth, db, **APPROVE)
    assert summary["eligible"] and not summary["promoted"], summary
    token = login("marketing")
    assert f'data-testid="eligible-{KEY}"' in page_text(client.get("/admin/experiments"))
    page = page_text(client.get(PAGE))
    assert "Approve promotion" in page and "Run readout now" in page
    readout_id = _readout_id(page)
    assert readout_id == str(summary["readout_id"])

    r = client.post(
        f"{PAGE}/promotion", data={"csrf_token": token, "readout_id": readout_id, "reason": "clear win in the pilot"}
    )
    assert r.status_code == 302 and r.headers["Location"] == PAGE
    db.expire_all()
    experiment = db.scalar(select(Experiment).where(Experiment.key == KEY))
    assert experiment.status == "rollout" and experiment.winner_arm_key == "credit"
    actions = [
        (a.action, a.actor)
        for a in db.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_key == KEY)
            .where(AuditEntry.action.in_(("promote", "approve_promotion")))
        )
    ]
    assert sorted(actions) == [
        ("approve_promotion", "user:marketing.ui@example.test"),
        ("promote", "user:marketing.ui@example.test"),
    ]
    body = page_text(client.get(PAGE))
    assert "Promotion approved: arm credit is rolled out" in body
    assert 'data-testid="experiment-status">rollout<' in body
    promotions = body[body.index('data-testid="promotions"') :]
    assert "pilot → rollout" in promotions and "approved" in promotions
    assert "Approve promotion" not in body  # it is no longer a pilot

    again = client.post(f"{PAGE}/promotion", data={"csrf_token": token, "readout_id": readout_id})
    assert again.status_code == 409
    assert "only a pilot is promoted" in page_text(again).split('data-testid="error-approve"')[1]


def test_an_ineligible_approval_lists_every_reason(app, client, auth, db, login):
    _, summary = _pilot_with_readout(
        app,
        client,
        auth,
        db,
        started_days_ago=10,
        cells=_one_tier(60),
        promotion_policy={"min_exposures_per_arm": 100, "min_runtime_days": 30, "mode": "approve"},
    )
    assert set(summary["blocked_by"]) >= {"min_runtime", "min_exposures_per_arm"}, summary
    token = login("admin")
    page = page_text(client.get(PAGE))
    assert "Approve promotion" not in page  # only offered when the readout allows it
    reasons = page[page.index('data-testid="blocked-by"') : page.index("</ul>", page.index('data-testid="blocked-by"'))]
    assert "the experiment has not run for the policy's minimum number of days" in reasons
    assert "an arm has fewer exposures than the policy's minimum" in reasons

    # a stale page (or a hand-made request) posts anyway: the form error repeats the reasons
    r = client.post(
        f"{PAGE}/promotion", data={"csrf_token": token, "readout_id": str(summary["readout_id"]), "reason": "please"}
    )
    assert r.status_code == 409
    error = page_text(r).split('data-testid="error-approve"')[1].split("</div>")[0]
    assert "does not allow promotion" in error and "Nothing was changed." in error
    assert "minimum number of days: 10.0 of 30 days" in error
    assert _status(db) == "pilot"

    # approving an older readout than the latest is refused too
    later = run_readout(get_database(app).sessionmaker, KEY, utcnow().replace(microsecond=0) + timedelta(seconds=5))
    r = client.post(f"{PAGE}/promotion", data={"csrf_token": token, "readout_id": str(summary["readout_id"])})
    assert r.status_code == 409 and f"is not the latest ({later['readout_id']})" in page_text(r)
    r = client.post(f"{PAGE}/promotion", data={"csrf_token": token, "readout_id": "12x"})
    assert r.status_code == 400 and 'data-testid="error-approve"' in page_text(r)


def test_approving_without_any_readout_is_a_form_error(client, auth, db, login):
    start_pilot(client, auth, db)
    db.commit()
    token = login("marketing")
    r = client.post(f"{PAGE}/promotion", data={"csrf_token": token})
    assert r.status_code == 404 and "has no readout" in page_text(r).split('data-testid="error-approve"')[1]
    assert 'data-testid="no-readout"' in page_text(r)


# --- SRM and defensive rendering ---------------------------------------------------------------


def test_a_sample_ratio_mismatch_shows_a_banner_and_blocks_promotion(app, client, auth, db, login):
    _, summary = _pilot_with_readout(
        app, client, auth, db, cells=[Cell("control", "basic", 2000, 0.80), Cell("credit", "basic", 1200, 0.90)]
    )
    assert "srm" in summary["blocked_by"], summary
    login("analyst")
    body = page_text(client.get(PAGE))
    assert 'data-testid="srm-warning"' in body and "Sample-ratio mismatch." in body
    assert "sample-ratio mismatch" in body[body.index('data-testid="blocked-by"') :]


def _store_results(db, experiment, cutoff, results) -> None:
    """A readout row with hand-written results, as an older or newer model version might store."""
    db.execute(
        insert(Readout).values(
            experiment_id=experiment.id,
            data_cutoff=cutoff,
            model_version=MODEL_VERSION,
            inputs_hash="0" * 64,
            method=results.get("method") or "conjugate",
            status_at_readout="pilot",
            error_code=results.get("error"),
            eligible=bool((results.get("promotion") or {}).get("eligible")),
            results=results,
            computed_at=cutoff,
        )
    )
    db.commit()


def test_a_converged_hierarchical_readout_shows_pooled_tiers_and_tier_winners(client, auth, db, login):
    experiment = start_pilot(client, auth, db)
    arms = [
        {
            "key": "control",
            "is_control": True,
            "exposed": 900,
            "trials": 800,
            "retention_mean": 0.8,
            "retention_ci95": [0.77, 0.83],
            "p_best": 0.01,
        },
        {
            "key": "credit",
            "exposed": 900,
            "trials": 800,
            "retention_mean": 0.9,
            "retention_ci95": [0.88, 0.92],
            "p_best": 0.99,
            "uplift_vs_control": {"mean": 0.1, "ci95": [0.06, 0.14]},
            "p_beats_control": 0.999,
        },
    ]
    pooled_vip = [{**arms[0], "retention_mean": 0.81}, {**arms[1], "retention_mean": 0.912}]
    _store_results(
        db,
        experiment,
        utcnow().replace(microsecond=0),
        {
            "method": "hierarchical",
            "arms": arms,
            "tiers": [{"tier": "vip", "arms": arms}],
            "srm": {"p_value": 0.4, "flag": False},
            "hierarchical": {
                "attempted": True,
                "ok": True,
                "tiers": [{"tier": "vip", "arms": pooled_vip}],
                "diagnostics": {"rhat_max": 1.003, "ess_bulk_min": 812.0, "divergences": 0},
                "sampler": "pymc",
                "chains": 2,
            },
            "promotion": {
                "eligible": True,
                "winner": "credit",
                "tier_winners": {"vip": "credit"},
                "blocked_by": [],
                "reasons": [],
            },
        },
    )
    login("marketing")
    body = page_text(client.get(PAGE))
    assert "The hierarchical model across tiers × arms (partial pooling) converged" in body
    assert "rhat_max" in body and "1.003" in body and "sampler" in body
    vip = body[body.index('data-tier="vip"') :]
    assert "rolls out credit" in vip and "partially pooled across tiers" in vip
    assert "91.2%" in vip  # the pooled estimate, not the tier-alone 90.0%
    assert "Approve promotion" in body and "<code>vip</code> → <code>credit</code>" in body


def test_a_readout_with_missing_fields_still_renders(app, client, auth, db, login):
    experiment = start_pilot(client, auth, db)
    now = utcnow().replace(microsecond=0)
    results = {
        "arms": [
            {
                "key": "control",
                "is_control": True,
                "retention_mean": None,
                "retention_ci95": None,
                "uplift_vs_control": None,
            },
            {
                "key": "credit",
                "retention_mean": "n/a",
                "retention_ci95": [0.1],
                "uplift_vs_control": {"mean": None, "ci95": None},
            },
        ],
        "tiers": None,
        "srm": None,
        "hierarchical": {
            "attempted": True,
            "ok": False,
            "reason": None,
            "diagnostics": {"r_hat_max": 1.3, "ess": [12, None]},
        },
        "promotion": {"eligible": False, "blocked_by": ["diagnostics", "made_up_rule"]},
        "error": "no_data",
        "holdout": None,
    }
    _store_results(db, experiment, now, results)
    login("marketing")
    r = client.get(PAGE)
    assert r.status_code == 200
    body = page_text(r)
    assert "No retention estimate to chart yet." in body
    assert "the hierarchical model failed its diagnostics" in body and "made up rule" in body
    assert 'data-testid="readout-error"' in body and 'data-testid="hierarchical-fallback"' in body
    assert "r_hat_max" in body and "1.3" in body and "12, —" in body
    assert "Approve promotion" not in body
    assert client.get("/admin/experiments").status_code == 200


def test_readout_view_survives_any_shape():
    for junk in (
        {},
        {"arms": None, "tiers": [None, {"tier": None, "arms": "x"}], "promotion": []},
        {
            "arms": [1, "a", {"key": None, "retention_mean": True}],
            "srm": {"p_value": float("nan"), "flag": True},
            "promotion": {"reasons": [None, {"code": "srm"}], "tier_winners": None},
        },
    ):
        view = readout_view(junk)
        assert view.eligible is False and view.chart.has_data is False
        assert all(not tier.chart.has_data for tier in view.tiers)
    assert [t.tier for t in readout_view({"tiers": [None, {"tier": None, "arms": "x"}]}).tiers] == ["(no tier)"]
    view = readout_view(
        {
            "arms": [{"key": None}],
            "srm": {"flag": True},
            "promotion": {"reasons": [{"code": "srm"}], "blocked_by": ["srm", "roi"]},
        }
    )
    assert view.srm_flag and [r.code for r in view.reasons] == ["srm", "roi"]
    assert view.reasons[0].message.startswith("the arms' exposures do not match")
    assert view.rows[0].key == "holdout" and view.rows[0].retention_mean is None


def test_per_tier_rows_use_the_hierarchical_estimates_when_it_converged():
    tier_alone = {
        "tier": "vip",
        "arms": [
            {
                "key": "control",
                "is_control": True,
                "exposed": 50,
                "trials": 40,
                "retention_mean": 0.80,
                "retention_ci95": [0.7, 0.9],
            },
            {
                "key": "credit",
                "exposed": 50,
                "trials": 40,
                "retention_mean": 0.95,
                "retention_ci95": [0.88, 0.99],
                "p_best": 0.99,
            },
        ],
    }
    pooled = {
        "tier": "vip",
        "arms": [
            {
                "key": "control",
                "is_control": True,
                "retention_mean": 0.82,
                "retention_ci95": [0.76, 0.87],
                "p_best": 0.1,
            },
            {
                "key": "credit",
                "retention_mean": 0.90,
                "retention_ci95": [0.85, 0.94],
                "p_best": 0.9,
                "uplift_vs_control": {"mean": 0.08, "ci95": [0.02, 0.14]},
            },
        ],
    }
    hierarchical = {
        "attempted": True,
        "ok": True,
        "tiers": [pooled],
        "sampler": "nuts",
        "chains": 4,
        "diagnostics": {"rhat_max": 1.002, "ess_bulk_min": 900.0, "divergences": 0},
    }
    view = readout_view({"tiers": [tier_alone], "hierarchical": hierarchical})
    (tier,) = view.tiers
    _control, credit = tier.rows
    assert tier.pooled and (credit.retention_mean, credit.retention_low, credit.p_best) == (0.90, 0.85, 0.9)
    assert credit.uplift_mean == 0.08 and (credit.exposed, credit.trials) == (50, 40)  # counts stay the tier's
    assert [name for name, _ in view.diagnostics] == ["rhat_max", "ess_bulk_min", "divergences", "sampler", "chains"]
    failed = readout_view({"tiers": [tier_alone], "hierarchical": {**hierarchical, "ok": False}})
    assert not failed.tiers[0].pooled and failed.tiers[0].rows[1].retention_mean == 0.95


# --- running a readout now, resuming spending ----------------------------------------------------


def test_run_readout_now_enqueues_a_job_that_a_worker_computes(app, client, auth, db, redis, login):
    experiment = start_pilot(client, auth, db, **APPROVE)
    populate(db, experiment, _one_tier(300), now=utcnow())
    db.commit()
    token = login("marketing")
    r = client.post(f"{PAGE}/readouts", data={"csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == PAGE
    assert "Readout started with data up to" in page_text(client.get(PAGE))
    assert get_queue(redis, "readouts").count == 1
    bind_job_database(get_database(app))
    run_queued_jobs_here(redis)
    body = page_text(client.get(PAGE))
    assert 'data-testid="no-readout"' not in body and '<svg class="interval-chart"' in body


def test_run_readout_now_with_redis_down_is_a_message_not_a_500(client, auth, db, login, monkeypatch):
    start_pilot(client, auth, db)
    db.commit()
    token = login("admin")
    # nothing listens on port 1; no retries, so the refusal is immediate
    dead = redis_lib.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    monkeypatch.setattr(experiments_views, "get_redis", lambda: dead)
    r = client.post(f"{PAGE}/readouts", data={"csrf_token": token})
    assert r.status_code == 302
    body = page_text(client.get(PAGE))
    assert "The job queue (Redis) cannot be reached, so no readout was started." in body
    assert "flash-error" in body


def test_a_draft_has_nothing_to_read_out(client, auth, db, login):
    client.post(
        "/api/v1/offers",
        json={"code": "BILL_CREDIT_5", "name": "Credit", "unit_cost": 5.0, "channels": ["sms"]},
        headers=auth["marketing"],
    )
    client.post(
        "/api/v1/experiments",
        json={"key": KEY, "name": "Draft", "arms": [{"key": "control"}]},
        headers=auth["marketing"],
    )
    token = login("marketing")
    body = page_text(client.get(PAGE))
    assert "Readouts start when the pilot starts." in body and "Run readout now" not in body
    r = client.post(f"{PAGE}/readouts", data={"csrf_token": token})
    assert r.status_code == 302 and "is a draft" in page_text(client.get(PAGE))


def test_resume_spending_needs_a_reason_and_is_audited(app, client, auth, db, login):
    _pilot_with_readout(app, client, auth, db, **APPROVE)
    db.execute(update(Experiment).where(Experiment.key == KEY).values(spending_paused=True))
    db.commit()
    token = login("marketing")
    body = page_text(client.get(PAGE))
    assert 'data-testid="spending-paused"' in body and "Resume spending" in body
    assert f'data-testid="paused-{KEY}"' in page_text(client.get("/admin/experiments"))

    r = client.post(f"{PAGE}/resume-spending", data={"csrf_token": token, "reason": "   "})
    assert r.status_code == 400 and "Say why spending may resume" in page_text(r).split('data-testid="error-resume"')[1]
    r = client.post(f"{PAGE}/resume-spending", data={"csrf_token": token, "reason": "x" * 5001})
    assert r.status_code == 400 and "5000" in page_text(r).split('data-testid="error-resume"')[1]
    db.expire_all()
    assert db.scalar(select(Experiment.spending_paused).where(Experiment.key == KEY)) is True

    r = client.post(f"{PAGE}/resume-spending", data={"csrf_token": token, "reason": "new pricing agreed"})
    assert r.status_code == 302
    db.expire_all()
    assert db.scalar(select(Experiment.spending_paused).where(Experiment.key == KEY)) is False
    audit = db.scalar(select(AuditEntry).where(AuditEntry.action == "resume_spending"))
    assert audit.after["reason"] == "new pricing agreed" and audit.actor == "user:marketing.ui@example.test"
    body = page_text(client.get(PAGE))
    assert "Spending resumed" in body and "Resume spending" not in body
    r = client.post(f"{PAGE}/resume-spending", data={"csrf_token": token, "reason": "again"})
    assert r.status_code == 409 and "is not paused" in page_text(r)


# --- chart geometry (pure) ---------------------------------------------------------------------


def test_nice_steps_and_domains():
    assert [nice_step(s) for s in (0.1, 0.04, 0.02, 1.0)] == [0.02, 0.01, 0.005, 0.2]
    assert axis_domain([]) is None and axis_domain([Interval("a", None)]) is None
    domain = axis_domain([Interval("a", 0.8, 0.78, 0.82), Interval("b", 0.9, 0.88, 0.92)])
    assert domain is not None
    low, high = domain
    assert low <= 0.78 and high >= 0.92 and 0 <= low < high <= 1
    assert axis_domain([Interval("a", 1.0, 1.0, 1.0)]) == (0.98, 1.0)  # kept inside [0, 1], not empty
    assert axis_domain([Interval("a", 0.0, 0.0, 0.0)]) == (0.0, 0.02)
    assert shared_domain([[Interval("a", 0.5, 0.4, 0.6)], [Interval("b", 0.9, 0.85, 0.95)]]) == axis_domain(
        [Interval("a", 0.5, 0.4, 0.6), Interval("b", 0.9, 0.85, 0.95)]
    )


def test_interval_chart_places_rows_on_the_axis():
    chart = interval_chart(
        [
            Interval("control", 0.8, 0.78, 0.82, is_reference=True),
            Interval("credit", 0.9, 0.88, 0.95),
            Interval("empty", None),
            Interval("a-very-long-arm-key-indeed", 0.85),
        ],
        title="t",
        chart_key="x.y",
        domain=(0.75, 0.9),
        width=400,
        label_width=100,
    )
    control, credit, empty, long = chart.rows
    assert chart.chart_id == "chart-x_y"
    assert chart.plot_left == 100 and chart.plot_right == 384
    assert control.x_low is not None and control.x_mean is not None and control.x_high is not None
    assert control.x_low < control.x_mean < control.x_high and chart.reference_x == control.x_mean
    assert credit.x_mean == chart.plot_right and credit.x_high == chart.plot_right  # 0.95 is past 0.90
    assert credit.clipped_high and not credit.clipped_low
    assert empty.x_mean is None and not empty.has_interval and empty.title == "empty: no data"
    assert long.has_interval is False and long.x_mean is not None
    assert long.label.endswith("…") and len(long.label) == 18 and long.key == "a-very-long-arm-key-indeed"
    assert [t.label for t in chart.ticks] == ["75%", "80%", "85%", "90%"]
    assert [t.x for t in chart.ticks] == [100.0, 194.7, 289.3, 384.0]
    assert control.y < credit.y < empty.y < long.y <= chart.plot_bottom < chart.height
