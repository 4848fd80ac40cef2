"""Experiments and their Bayesian readouts in the admin UI (registered on the ``admin`` blueprint).

    GET  /admin/experiments                          every experiment with its latest readout
    GET  /admin/experiments/<key>                    arms, policy, the latest readout (tables,
                                                     SVG charts, SRM, diagnostics, per tier),
                                                     the promotion verdict, promotions, alerts
    POST /admin/experiments/<key>/readouts           "Run readout now" (enqueue)   admin, marketing
    POST /admin/experiments/<key>/promotion          "Approve promotion"           admin, marketing
    POST /admin/experiments/<key>/resume-spending    "Resume spending" + reason    admin, marketing

The pages call the same services as the JSON API (``experiments.readouts``,
``experiments.promotion``, ``experiments.jobs``), which also write the audit rows, so the UI and
the API cannot disagree. The CSV download is the API's own ``readout.csv``: the session cookie
authenticates GET requests there too.

A stored readout is JSON written by whichever model version computed it, so every field read
here may be missing or None; ``readout_view`` turns it into plain rows once, and the templates
only format them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import flash, redirect, request, url_for
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from admin_ui.blueprint import actor, bp, render_page, require_role
from admin_ui.charts import IntervalChart, finite, format_percent, interval_chart, retention_intervals, shared_domain
from experiments import schemas
from experiments.jobs import enqueue_readout
from experiments.models import Experiment, Readout
from experiments.promotion import alerts_json, approve_promotion, promotions_json, resume_spending
from experiments.promotion_policy import promotion_policy_from_json
from experiments.promotion_rules import BLOCKERS
from experiments.readouts import latest_readout, readout_json
from experiments.service import get_experiment, list_experiments
from infra.auth import CONFIG_WRITERS
from infra.db import db_session, utcnow
from infra.errors import ApiError, NotFound
from infra.redis_conn import get_redis

log = logging.getLogger(__name__)

QUEUE_DOWN = (
    "The job queue (Redis) cannot be reached, so no readout was started. Try again in a "
    "moment; scheduled readouts resume on their own once the queue is back."
)


# --- number formats (None, NaN and text all show as a dash) ----------------------------------


def _signed_pp(share: float) -> str:
    return f"{100 * share:+.1f}"


def fmt_pp(share: Any) -> str:
    """A difference of shares in percentage points: 0.032 → ``+3.2 pp``."""
    number = finite(share)
    return "—" if number is None else f"{_signed_pp(number)} pp"


def fmt_percent_range(low: Any, high: Any) -> str:
    lo, hi = finite(low), finite(high)
    return "—" if lo is None or hi is None else f"{format_percent(lo)} to {format_percent(hi)}"


def fmt_pp_range(low: Any, high: Any) -> str:
    lo, hi = finite(low), finite(high)
    return "—" if lo is None or hi is None else f"{_signed_pp(lo)} to {_signed_pp(hi)} pp"


def fmt_probability(p: Any) -> str:
    """Three decimals, but "> 0.999" / "< 0.001" at the ends: a posterior probability (often
    from a finite number of draws) is never certainty, even when it rounds to 1 or 0."""
    number = finite(p)
    if number is None:
        return "—"
    if number > 0.999:
        return "> 0.999"
    if number < 0.001:
        return "< 0.001"
    return f"{number:.3f}"


def fmt_p_value(p: Any) -> str:
    """A test's p-value: three decimals, or scientific notation below 0.001 (SRM p-values of
    a broken split are astronomically small, and "0.000" would hide how small)."""
    number = finite(p)
    if number is None:
        return "—"
    return f"{number:.1e}" if number < 0.001 else f"{number:.3f}"


def fmt_loss_pp(share: Any) -> str:
    """Expected loss (retention-rate units) in percentage points, two decimals."""
    number = finite(share)
    return "—" if number is None else f"{100 * number:.2f} pp"


def fmt_number(value: Any, digits: int = 2) -> str:
    number = finite(value)
    return "—" if number is None else f"{number:,.{digits}f}"


def fmt_count(value: Any) -> str:
    number = finite(value)
    return "—" if number is None else f"{int(number):,}"


def fmt_time(value: Any) -> str:
    """A datetime or ISO-8601 text as ``2026-11-01 09:30 UTC``."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, datetime):
        return "—"
    return value.strftime("%Y-%m-%d %H:%M UTC")


def fmt_value(value: Any) -> str:
    """A diagnostics value of unknown type, compactly."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "—"}[value]
    if isinstance(value, (int, float)):
        number = finite(value)
        return "—" if number is None else f"{number:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt_value(v)}" for k, v in value.items())
    return str(value)


FORMATS = {
    "pct": format_percent,
    "pct_range": fmt_percent_range,
    "pp": fmt_pp,
    "pp_range": fmt_pp_range,
    "prob": fmt_probability,
    "p_value": fmt_p_value,
    "loss": fmt_loss_pp,
    "num": fmt_number,
    "count": fmt_count,
    "when": fmt_time,
    "value": fmt_value,
}


# --- the readout, flattened for the templates -----------------------------------------------


@dataclass(frozen=True)
class ArmRow:
    key: str
    is_control: bool
    exposed: float | None
    trials: float | None
    retained: float | None
    retention_mean: float | None
    retention_low: float | None
    retention_high: float | None
    uplift_mean: float | None
    uplift_low: float | None
    uplift_high: float | None
    p_beats_control: float | None
    p_best: float | None
    expected_loss: float | None
    arpu_mean: float | None
    cost: float | None
    cost_per_subscriber: float | None
    roi_mean: float | None
    p_roi_above_floor: float | None


def _pair(value: Any) -> tuple[float | None, float | None]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return finite(value[0]), finite(value[1])
    return None, None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def arm_row(arm: dict[str, Any]) -> ArmRow:
    """One arm of the readout JSON as numbers or None."""
    retention_low, retention_high = _pair(arm.get("retention_ci95"))
    uplift = _dict(arm.get("uplift_vs_control"))
    uplift_low, uplift_high = _pair(uplift.get("ci95"))
    return ArmRow(
        key=str(arm.get("key") or "holdout"),
        is_control=bool(arm.get("is_control")),
        exposed=finite(arm.get("exposed")),
        trials=finite(arm.get("trials")),
        retained=finite(arm.get("retained")),
        retention_mean=finite(arm.get("retention_mean")),
        retention_low=retention_low,
        retention_high=retention_high,
        uplift_mean=finite(uplift.get("mean")),
        uplift_low=uplift_low,
        uplift_high=uplift_high,
        p_beats_control=finite(arm.get("p_beats_control")),
        p_best=finite(arm.get("p_best")),
        expected_loss=finite(arm.get("expected_loss")),
        arpu_mean=finite(arm.get("arpu_mean")),
        cost=finite(arm.get("cost")),
        cost_per_subscriber=finite(arm.get("cost_per_subscriber")),
        roi_mean=finite(arm.get("roi_mean")),
        p_roi_above_floor=finite(arm.get("p_roi_above_floor")),
    )


@dataclass(frozen=True)
class TierView:
    tier: str
    rows: tuple[ArmRow, ...]
    chart: IntervalChart
    winner: str | None  # the arm the hierarchical model rolls out in this tier, if any
    error: str | None
    error_message: str | None
    pooled: bool  # estimates from the hierarchical model (partial pooling), not the tier alone


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class ReadoutView:
    """What the experiment page shows of one readout."""

    readout_id: Any
    computed_at: Any
    data_cutoff: Any
    status_at_readout: Any
    method: str | None
    model_version: str | None
    error: str | None
    error_message: str | None
    srm_p_value: float | None
    srm_flag: bool
    roi_floor: float | None
    value_per_retained: float | None
    value_source: str | None
    rows: tuple[ArmRow, ...]
    chart: IntervalChart
    tiers: tuple[TierView, ...]
    hierarchical_attempted: bool
    hierarchical_ok: bool
    hierarchical_reason: str | None
    diagnostics: tuple[tuple[str, Any], ...]
    eligible: bool
    winner: str | None
    tier_winners: tuple[tuple[str, str], ...]
    reasons: tuple[Reason, ...]
    holdout: dict[str, Any] | None


def _reasons(promotion: dict[str, Any]) -> tuple[Reason, ...]:
    """Every blocker in plain words: the verdict's own messages, else the rule's description."""
    reasons = [
        Reason(str(r.get("code") or ""), str(r.get("message") or BLOCKERS.get(str(r.get("code")), "")))
        for r in _list(promotion.get("reasons"))
        if isinstance(r, dict)
    ]
    explained = {reason.code for reason in reasons}
    for code in _list(promotion.get("blocked_by")):
        if str(code) not in explained:
            reasons.append(Reason(str(code), BLOCKERS.get(str(code), str(code).replace("_", " "))))
    return tuple(reasons)


# What the hierarchical model estimates per tier × arm; counts and money stay the tier's own.
POOLED_FIELDS = ("retention_mean", "retention_ci95", "uplift_vs_control", "p_beats_control", "p_best")
FIT_SETTINGS = ("sampler", "parameterisation", "chains", "draws", "tune")


def _tiers_with_arms(
    results: dict[str, Any], hierarchical: dict[str, Any]
) -> list[tuple[dict[str, Any], list[dict[str, Any]], bool]]:
    """Each tier of the readout with its arms. When the hierarchical model converged its
    partially pooled estimates replace the tier-alone (conjugate) ones, since that is what
    the per-tier winners rest on."""
    pooled: dict[Any, dict[Any, dict[str, Any]]] = {}
    if hierarchical.get("ok"):
        for tier in _list(hierarchical.get("tiers")):
            if isinstance(tier, dict):
                pooled[tier.get("tier")] = {
                    arm.get("key"): arm for arm in _list(tier.get("arms")) if isinstance(arm, dict)
                }
    out = []
    for tier in _list(results.get("tiers")):
        if not isinstance(tier, dict):
            continue
        arms = [arm for arm in _list(tier.get("arms")) if isinstance(arm, dict)]
        estimates = pooled.get(tier.get("tier"), {})
        merged = [
            {**arm, **{name: estimates[arm.get("key")].get(name) for name in POOLED_FIELDS}}
            if arm.get("key") in estimates
            else arm
            for arm in arms
        ]
        out.append((tier, merged, bool(estimates) and all(arm.get("key") in estimates for arm in arms)))
    return out


def _diagnostics(hierarchical: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The fit's convergence figures, then the sampler settings they were measured under."""
    diagnostics = hierarchical.get("diagnostics")
    if isinstance(diagnostics, dict):
        items = list(diagnostics.items())
    else:
        items = [("diagnostics", diagnostics)] if diagnostics is not None else []
    if items:
        items += [(name, hierarchical[name]) for name in FIT_SETTINGS if hierarchical.get(name) is not None]
    return tuple(items)


def readout_view(results: dict[str, Any], *, roi_floor: float | None = None) -> ReadoutView:
    """The readout JSON (DESIGN §7 and its additions) as plain rows and charts."""
    arms = [arm for arm in _list(results.get("arms")) if isinstance(arm, dict)]
    srm = _dict(results.get("srm"))
    hierarchical = _dict(results.get("hierarchical"))
    promotion = _dict(results.get("promotion"))
    tier_winners = {str(k): str(v) for k, v in _dict(promotion.get("tier_winners")).items()}
    tiers = _tiers_with_arms(results, hierarchical)
    domain = shared_domain(retention_intervals(group) for _, group, _ in tiers)
    tier_views = []
    for tier, group, pooled in tiers:
        name = str(tier.get("tier") or "(no tier)")
        tier_views.append(
            TierView(
                tier=name,
                rows=tuple(arm_row(arm) for arm in group),
                winner=tier_winners.get(name),
                error=tier.get("error"),
                error_message=tier.get("error_message"),
                pooled=pooled,
                chart=interval_chart(
                    retention_intervals(group),
                    title=f"Retention in tier {name}",
                    chart_key=f"tier-{name}",
                    domain=domain,
                    width=420,
                    label_width=100,
                ),
            )
        )
    floor = finite(results.get("roi_floor"))
    return ReadoutView(
        readout_id=results.get("readout_id"),
        computed_at=results.get("computed_at"),
        data_cutoff=results.get("data_cutoff"),
        status_at_readout=results.get("status_at_readout"),
        method=results.get("method"),
        model_version=results.get("model_version"),
        error=results.get("error"),
        error_message=results.get("error_message"),
        srm_p_value=finite(srm.get("p_value")),
        srm_flag=bool(srm.get("flag")),
        roi_floor=floor if floor is not None else roi_floor,
        value_per_retained=finite(results.get("value_per_retained")),
        value_source=results.get("value_source"),
        rows=tuple(arm_row(arm) for arm in arms),
        chart=interval_chart(
            retention_intervals(arms),
            title="Retention per arm, with 95% credible intervals",
            chart_key="all-arms",
            width=760,
            label_width=140,
        ),
        tiers=tuple(tier_views),
        hierarchical_attempted=bool(hierarchical.get("attempted")),
        hierarchical_ok=bool(hierarchical.get("ok")),
        hierarchical_reason=hierarchical.get("reason"),
        diagnostics=_diagnostics(hierarchical),
        eligible=bool(promotion.get("eligible")),
        winner=promotion.get("winner"),
        tier_winners=tuple(sorted(tier_winners.items())),
        reasons=_reasons(promotion),
        holdout=results.get("holdout") if isinstance(results.get("holdout"), dict) else None,
    )


@bp.context_processor
def _readout_helpers() -> dict[str, Any]:
    return {"fmt": FORMATS}


# --- pages ------------------------------------------------------------------------------------


def _latest_or_none(session: Session, experiment: Experiment) -> Readout | None:
    try:
        return latest_readout(session, experiment)
    except NotFound:
        return None


@bp.get("/experiments", endpoint="experiments")
def experimentsrender_page() -> str:
    """Every experiment with its newest readout's time and verdict."""
    s = db_session()
    rows = [(experiment, _latest_or_none(s, experiment)) for experiment in list_experiments(s)]
    return render_page("experiments.html", "admin.experiments", rows=rows)


def _experiment_page(
    key: str, *, status: int = 200, errors: dict[str, list[str]] | None = None, values: dict[str, str] | None = None
) -> Any:
    s = db_session()
    experiment = get_experiment(s, key)  # the HTML 404 page if unknown
    policy = promotion_policy_from_json(experiment.promotion_policy)
    row = _latest_or_none(s, experiment)
    readout = readout_view(readout_json(row, experiment), roi_floor=policy.roi_floor) if row is not None else None
    total_weight = sum(arm.weight for arm in experiment.arms) or 1.0
    can_approve = (
        readout is not None
        and readout.eligible
        and experiment.status == "pilot"
        and readout.status_at_readout == "pilot"
    )
    return render_page(
        "experiment.html",
        "admin.experiments",
        status=status,
        experiment=experiment,
        policy=policy,
        readout=readout,
        total_weight=total_weight,
        can_approve=can_approve,
        promotions=promotions_json(s, experiment),
        alerts=alerts_json(s, experiment),
        errors=errors or {},
        values=values or {},
        csv_url=url_for("readout_api.get_readout_csv", key=experiment.key) if readout else None,
    )


@bp.get("/experiments/<key>", endpoint="experiment")
def experimentrender_page(key: str) -> Any:
    return _experiment_page(key)


def _back(key: str) -> Response:
    return redirect(url_for("admin.experiment", key=key))


@bp.post("/experiments/<key>/readouts")
@require_role(*CONFIG_WRITERS)
def experiment_run_readout(key: str) -> Response:
    """Enqueue a readout as of now; the page shows it once a worker has computed it."""
    experiment = get_experiment(db_session(), key)
    if experiment.status == "draft":
        flash(f"Experiment {key} is a draft: there is nothing to read out until its pilot starts.", "error")
        return _back(key)
    cutoff = utcnow().replace(microsecond=0)
    try:
        job, created = enqueue_readout(get_redis(), experiment.key, cutoff)
    except RedisError:
        log.warning("readout of %s not enqueued: Redis unreachable", key, exc_info=True)
        flash(QUEUE_DOWN, "error")
        return _back(key)
    if created:
        flash(
            f"Readout started with data up to {fmt_time(cutoff)} (job {job.id}). Reload this page in a "
            f"minute to see it.",
            "success",
        )
    else:
        flash(f"A readout with data up to {fmt_time(cutoff)} is already queued or running (job {job.id}).", "info")
    return _back(key)


def _form_failure(key: str, form: str, messages: list[str], status: int) -> Any:
    db_session().rollback()
    return _experiment_page(
        key, status=status, errors={form: messages}, values={f"{form}_reason": request.form.get("reason", "")}
    )


def _api_error_messages(exc: ApiError) -> list[str]:
    """The error's message, then each detail's (a blocked promotion lists every reason)."""
    messages = [exc.message]
    for detail in exc.details if isinstance(exc.details, list) else []:
        if isinstance(detail, dict) and detail.get("message"):
            messages.append(str(detail["message"]))
    return messages


@bp.post("/experiments/<key>/promotion")
@require_role(*CONFIG_WRITERS)
def experiment_approve(key: str) -> Any:
    """Approve the promotion the readout shown on the page allows (it must still be the latest)."""
    s = db_session()
    get_experiment(s, key)  # an unknown experiment is the 404 page, not a form error
    raw_id = request.form.get("readout_id", "").strip()
    try:
        body = schemas.ApprovalIn(
            readout_id=int(raw_id) if raw_id else None, reason=request.form.get("reason", "").strip()
        )
    except (ValueError, ValidationError):
        return _form_failure(
            key, "approve", ["The form was not sent from this page; reload it and try again. Nothing was changed."], 400
        )
    try:
        promotion = approve_promotion(s, key, actor=actor(), readout_id=body.readout_id, reason=body.reason)
    except ApiError as exc:
        return _form_failure(key, "approve", _api_error_messages(exc), exc.status)
    s.commit()
    flash(f"Promotion approved: arm {promotion.winner_arm_key} is rolled out to experiment {key}.", "success")
    return _back(key)


@bp.post("/experiments/<key>/resume-spending")
@require_role(*CONFIG_WRITERS)
def experiment_resume(key: str) -> Any:
    """Resume paid actions after the ROI alarm; the reason goes into the audit log."""
    s = db_session()
    get_experiment(s, key)
    reason = request.form.get("reason", "").strip()
    if not reason:
        return _form_failure(
            key,
            "resume",
            ["Say why spending may resume: the reason is kept in the audit log. Nothing was changed."],
            400,
        )
    try:
        body = schemas.ResumeSpendingIn(reason=reason)
    except ValidationError as exc:
        return _form_failure(key, "resume", [f"Reason: {e['msg']}" for e in exc.errors(include_url=False)], 400)
    try:
        resume_spending(s, key, actor=actor(), reason=body.reason)
    except ApiError as exc:
        return _form_failure(key, "resume", _api_error_messages(exc), exc.status)
    s.commit()
    flash(f"Spending resumed for experiment {key}; open alerts are resolved.", "success")
    return _back(key)
