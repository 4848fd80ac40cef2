"""The per-process config snapshot of the decision API: loaded from the database, compiled
once, and reused until the config moves (``infra.config_version``).

Rebuilt when: the Redis version counter differs from the snapshot's (checked before each
batch's database read); the database's config generation, read with the profiles, is newer
than the snapshot's (a change Redis could not announce); the snapshot is older than
``MAX_SNAPSHOT_AGE_S`` (what the config does not cover: a share-of-revenue cap follows the
subscriber base) or a budget period rolled over (``valid_until``). Never per request otherwise.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from decisioning.risk import DEFAULT_RISK_POLICY, RiskPolicy
from decisioning.snapshot import DecisionSnapshot, build_snapshot
from experiments.models import RUNNING_STATUSES, Experiment, Readout
from infra.config_version import read_generation
from offers.models import Budget, ContactPolicy, Offer, Tier, TierPolicy, TierScheme
from offers.repository import active_risk_policy, base_revenue_per_month

MAX_SNAPSHOT_AGE_S = 30.0
MONTHS_PER_PERIOD = {"month": 1, "quarter": 3, "year": 12}


def _rows(session: Session, model: Any, *columns: str) -> list[dict[str, Any]]:
    table = model.__table__
    return [dict(row._mapping) for row in session.execute(select(*(table.c[c] for c in columns)))]


def _uplift_estimates(session: Session, experiments: list[Experiment]) -> dict[tuple[str | None, str], float]:
    """Retention uplift of each rolled-out winner, from its promotion's latest readout: per
    tier where the readout has one (hierarchical first, else the tier's conjugate result),
    and over all tiers (key ``(None, offer)``)."""
    estimates: dict[tuple[str | None, str], float] = {}
    for experiment in experiments:
        if experiment.status != "rollout" or not experiment.winner_arm_key:
            continue
        offers = {arm.key: arm.offer_code for arm in experiment.arms}
        readout = session.scalar(
            select(Readout)
            .where(Readout.experiment_id == experiment.id)
            .order_by(Readout.data_cutoff.desc(), Readout.id.desc())
            .limit(1)
        )
        if readout is None:
            continue
        results = readout.results
        tier_winners: dict[str, str] = experiment.tier_winners or {}  # tier code -> arm key

        def uplift_of(arms: list[dict[str, Any]], key: str) -> float | None:
            for arm in arms:
                if arm.get("key") == key and (arm.get("uplift_vs_control") or {}).get("mean") is not None:
                    return float(arm["uplift_vs_control"]["mean"])
            return None

        offer = offers.get(experiment.winner_arm_key)
        overall = uplift_of(results.get("arms", []), experiment.winner_arm_key)
        if offer and overall is not None:
            estimates[(None, offer)] = overall
        per_tier = {t.get("tier"): t.get("arms", []) for t in results.get("tiers", [])}
        for tier in (results.get("hierarchical") or {}).get("tiers", []) or []:
            per_tier[tier.get("tier")] = tier.get("arms", [])  # pooled estimates win where they exist
        for tier, arms in per_tier.items():
            if tier is None:
                continue
            arm_key = tier_winners.get(tier, experiment.winner_arm_key)
            value = uplift_of(arms, arm_key)
            arm_offer = offers.get(arm_key)
            if arm_offer and value is not None:
                estimates[(tier, arm_offer)] = value
    return estimates


class LoadedConfig(NamedTuple):
    """A compiled snapshot and the running experiments' database ids and phases (key → (id,
    phase)), read in the same transaction."""

    snapshot: DecisionSnapshot
    experiments: dict[str, tuple[int, int]]


def _risk_policy(session: Session) -> RiskPolicy:
    """The active risk-level policy's thresholds; the playbooks' defaults when none is active."""
    row = active_risk_policy(session)
    if row is None:
        return DEFAULT_RISK_POLICY
    return RiskPolicy(
        yellow_churn_score=row.yellow_churn_score,
        red_churn_score=row.red_churn_score,
        inactive_months=row.inactive_months,
        consecutive_downgrades=row.consecutive_downgrades,
        unresolved_complaints=row.unresolved_complaints,
        complaint_surge_90d=row.complaint_surge_90d,
    )


def load_config(session: Session, now: datetime) -> LoadedConfig:
    """Read the whole decision config and compile it; its version is the config generation
    it was read at (one transaction: SQLite's reads share a snapshot, PostgreSQL's are made
    to, while ``session`` owns its connection)."""
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        # one snapshot of the database for every table (and the generation that labels them):
        # read committed would let a change committing midway in, under the older generation
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    version = read_generation(session)
    offers = _rows(
        session,
        Offer,
        "code",
        "name",
        "unit_cost",
        "channels",
        "eligibility",
        "prior_uplift",
        "value_horizon_months",
        "active",
    )
    tiers = [
        dict(row._mapping)
        for row in session.execute(
            select(Tier.code, Tier.scheme_code, Tier.rank, Tier.rule, Tier.name, Tier.active)
            .join(TierScheme, TierScheme.code == Tier.scheme_code)
            .where(TierScheme.active.is_(True))
        )
    ]
    primary = session.scalar(
        select(TierScheme.code).where(TierScheme.is_primary.is_(True), TierScheme.active.is_(True))
    )
    policies = _rows(
        session,
        TierPolicy,
        "tier_code",
        "offer_code",
        "allowed",
        "max_cost",
        "granted_by",
        "context_weight",
        "lever",
        "note",
        "active",
    )
    contacts = _rows(
        session,
        ContactPolicy,
        "channel",
        "max_contacts",
        "window_days",
        "quiet_start",
        "quiet_end",
        "timezone",
        "active",
    )
    budgets = _rows(
        session,
        Budget,
        "code",
        "period",
        "cap_amount",
        "cap_share_of_revenue",
        "scope_type",
        "scope_value",
        "roi_floor",
        "max_cost_share_of_ltv",
        "active",
    )
    monthly_revenue = base_revenue_per_month(session) if any(b["cap_share_of_revenue"] for b in budgets) else 0.0
    for budget in budgets:  # a share-of-revenue cap becomes money for its period
        if budget["cap_share_of_revenue"] is not None:
            months = MONTHS_PER_PERIOD.get(budget["period"], 1)
            budget["cap_amount"] = budget["cap_share_of_revenue"] * monthly_revenue * months
            budget["cap_share_of_revenue"] = None
    running = list(
        session.scalars(select(Experiment).where(Experiment.status.in_(RUNNING_STATUSES)).order_by(Experiment.key))
    )
    experiments = [
        {
            "key": e.key,
            "status": e.status,
            "target": e.target,
            "coverage": e.coverage,
            "holdout_share": e.holdout_share,
            "hash_seed": e.hash_seed,
            "hash_version": e.hash_version,
            "namespace": e.namespace,
            "namespace_start": e.namespace_start,
            "namespace_end": e.namespace_end,
            "winner_arm_key": e.winner_arm_key,
            "tier_winners": e.tier_winners or {},
            "budget_code": e.budget_code,
            "spending_paused": e.spending_paused,
            "arms": [
                {"key": a.key, "offer_code": a.offer_code, "weight": a.weight, "position": a.position} for a in e.arms
            ],
        }
        for e in running
    ]
    snapshot = build_snapshot(
        version=version,
        offers=offers,
        tiers=tiers,
        primary_scheme=primary,
        tier_policies=policies,
        contact_policies=contacts,
        budgets=budgets,
        experiments=experiments,
        uplift_estimates=_uplift_estimates(session, running),
        risk_policy=_risk_policy(session),
        now=now,
    )
    return LoadedConfig(snapshot, {e.key: (e.id, e.phase) for e in running})


class SnapshotCache:
    """One compiled config per process, swapped atomically when the config moves."""

    def __init__(self, max_age_s: float = MAX_SNAPSHOT_AGE_S) -> None:
        self.max_age_s = max_age_s
        # (config, the version it was loaded for, when): one tuple, swapped whole and read once,
        # so a thread never judges one load's config by another load's version
        self._state: tuple[LoadedConfig, tuple[str, int] | None, float] | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> LoadedConfig | None:
        """The config loaded last (possibly stale), or None before the first load."""
        state = self._state
        return state[0] if state is not None else None

    def current(
        self, session_factory: Any, version: tuple[str, int] | None, now: datetime, generation: int | None = None
    ) -> LoadedConfig:
        """The config for ``version`` ((epoch, counter) of the Redis counter; None: Redis could
        not say) and, when given, at least the database's config ``generation``."""
        state = self._state
        if state is not None and not self._stale(state, version, generation, now):
            return state[0]
        with self._lock:  # one rebuild per process, the other threads wait for it
            state = self._state
            if state is None or self._stale(state, version, generation, now):
                with session_factory() as session:
                    loaded = load_config(session, now)
                state = self._state = (loaded, version, time.monotonic())
            return state[0]

    def _stale(
        self,
        state: tuple[LoadedConfig, tuple[str, int] | None, float],
        version: tuple[str, int] | None,
        generation: int | None,
        now: datetime,
    ) -> bool:
        loaded, loaded_version, loaded_at = state
        if time.monotonic() - loaded_at > self.max_age_s:
            return True
        if loaded.snapshot.valid_until is not None and now >= loaded.snapshot.valid_until:
            return True
        if generation is not None and generation > loaded.snapshot.version:
            return True
        return version is not None and version != loaded_version

    def clear(self) -> None:
        self._state = None
