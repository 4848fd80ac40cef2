"""The pure next-best-action core (decisioning/core.py, decisioning/snapshot.py; DESIGN §4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from decisioning.core import DecisionRequest, DecisionState, decide
from decisioning.snapshot import (
    SnapshotError,
    budget_period_bounds,
    build_snapshot,
    experiment_spec_from_row,
)
from experiments.assignment import assign
from offers import demo_seed

NOW = datetime(2025, 3, 4, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
PROFILE = {"arpu": 40.0, "ltv": 1000.0, "timezone": "Asia/Shanghai", "status": "active"}


# --- builders ----------------------------------------------------------------------------------


def offer(
    code: str,
    cost: float = 2.0,
    *,
    channels: tuple[str, ...] = ("sms", "app"),
    eligibility: dict | None = None,
    uplift: float = 0.05,
    horizon: int = 12,
    **extra: Any,
) -> dict:
    return {
        "code": code,
        "name": code.title(),
        "unit_cost": cost,
        "channels": list(channels),
        "eligibility": eligibility or {},
        "prior_uplift": uplift,
        "value_horizon_months": horizon,
        **extra,
    }


def experiment(
    key: str,
    arms: list[tuple[str, str | None]],
    *,
    status: str = "pilot",
    target: dict | None = None,
    coverage: float = 1.0,
    holdout: float = 0.0,
    **extra: Any,
) -> dict:
    return {
        "key": key,
        "status": status,
        "target": target or {},
        "hash_seed": key,
        "coverage": coverage,
        "holdout_share": holdout,
        **extra,
        "arms": [{"key": arm, "offer_code": code, "weight": 1, "position": i} for i, (arm, code) in enumerate(arms)],
    }


TIERS = [
    {"code": "vip", "scheme_code": "value", "rank": 1, "name": "VIP", "rule": {"arpu": {"$gte": 100}}},
    {"code": "basic", "scheme_code": "value", "rank": 2, "name": "Basic", "rule": {}},
]


def snapshot(offers: list[dict], **config: Any):
    config.setdefault("tiers", TIERS)
    config.setdefault("primary_scheme", "value")
    config.setdefault("now", None)  # no budget period, so no pacing, unless a test gives one
    return build_snapshot(version=7, offers=offers, **config)


def run(
    snap,
    profile: dict | None = None,
    *,
    channel: str = "sms",
    subscriber: str = "s-1",
    context: dict | None = None,
    state: DecisionState | None = None,
    now: datetime = NOW,
):
    request = DecisionRequest(subscriber, channel, PROFILE if profile is None else profile, context or {})
    return decide(snap, request, state, now)


def subscriber_where(predicate) -> str:
    """The first id ``s-<n>`` the predicate accepts (experiments hash ids; tests pick ids)."""
    for n in range(100_000):
        if predicate(f"s-{n}"):
            return f"s-{n}"
    raise AssertionError("no subscriber id found")


# --- arbitration -------------------------------------------------------------------------------


def test_best_positive_score_wins_and_the_runner_up_is_told_why():
    snap = snapshot([offer("SMALL", 1.0, uplift=0.01), offer("BIG", 5.0, uplift=0.05)])
    result = run(snap)
    assert result.action.offer_code == "BIG"
    assert result.score == pytest.approx(0.05 * 1000 - 5.0)
    assert result.probability == 1.0 and result.experiment is None
    assert result.reasons == (("SMALL", "lower_score", "scored 9.00; BIG scored 45.00"),)
    assert result.cost == 5.0


def test_score_uses_uplift_value_context_weight_and_lever():
    snap = snapshot(
        [offer("A", 2.0, uplift=0.05)],
        tier_policies=[{"tier_code": "basic", "offer_code": "A", "context_weight": 1.2, "lever": 1.5}],
    )
    assert run(snap).score == pytest.approx(0.05 * 1000 * 1.2 * 1.5 - 2.0)


def test_promoted_uplift_for_the_tier_beats_every_tier_beats_the_prior():
    offers = [offer("A", 2.0, uplift=0.05)]
    assert run(snapshot(offers, uplift_estimates={(None, "A"): 0.02})).score == pytest.approx(18.0)
    assert run(snapshot(offers, uplift_estimates={(None, "A"): 0.02, ("basic", "A"): 0.03})).score == pytest.approx(
        28.0
    )
    assert run(snapshot(offers, uplift_estimates={("vip", "A"): 0.03})).score == pytest.approx(48.0)


def test_ties_go_to_the_cheaper_offer_then_catalogue_order():
    # same score 48: 0.05 × 1000 − 2 and 0.049 × 1000 − 1
    snap = snapshot([offer("DEAR", 2.0, uplift=0.05), offer("CHEAP", 1.0, uplift=0.049)])
    assert run(snap).action.offer_code == "CHEAP"
    snap = snapshot([offer("FIRST", 2.0), offer("SECOND", 2.0)])
    assert run(snap).action.offer_code == "FIRST"


def test_no_action_when_nothing_scores_positive():
    snap = snapshot([offer("FREE_BUT_HARMFUL", 0.0, uplift=-0.01), offer("NOTHING", 0.0, uplift=0.0)])
    result = run(snap)
    assert result.action is None and result.score is None and result.cost == 0.0
    assert result.reason_codes == {"FREE_BUT_HARMFUL": "not_positive_score", "NOTHING": "not_positive_score"}
    assert result.budgets_to_reserve == () and result.probability == 1.0


def test_roi_below_floor_excludes_paid_offers_and_free_offers_pass():
    # gain 0.01 × 1000 = 10 for a cost of 8: ROI 1.25 < 1.5
    snap = snapshot([offer("WEAK", 8.0, uplift=0.01), offer("FREE", 0.0, uplift=0.001)])
    result = run(snap)
    assert result.reason_codes["WEAK"] == "roi_below_floor"
    assert result.reasons[0].message == "expected ROI 1.25 is below the floor of 1.5"
    assert result.action.offer_code == "FREE"
    # just under the floor reads as under it: 1.4995 is shown as 1.49, never as "1.50 is below 1.5"
    almost = run(snapshot([offer("ALMOST", 10.0, uplift=0.014995)]))
    assert almost.reasons[0].message == "expected ROI 1.49 is below the floor of 1.5"


def test_the_strictest_roi_floor_among_budgets_in_scope_applies():
    # ROI 0.05 × 1000 / 20 = 2.5: passes the default 1.5, fails a tier budget's 3.0
    budgets = [
        {"code": "FUND", "scope_type": "programme", "cap_amount": 1e6},
        {"code": "BASIC_FUND", "scope_type": "tier", "scope_value": "basic", "cap_amount": 1e6, "roi_floor": 3.0},
    ]
    snap = snapshot([offer("A", 20.0)], budgets=budgets)
    assert run(snap).reason_codes == {"A": "roi_below_floor"}
    assert run(snap, {**PROFILE, "arpu": 150.0}).action.offer_code == "A"  # vip: not in BASIC_FUND's scope


def test_ltv_cap_is_20_percent_of_lifetime_value_by_default():
    snap = snapshot([offer("PRICEY", 250.0, uplift=0.9)])
    result = run(snap)
    assert result.reason_codes == {"PRICEY": "ltv_cap"}
    assert result.reasons[0].message == "costs 250.00, more than 20% of the subscriber's lifetime value 1000.00"
    assert run(snap, {**PROFILE, "ltv": 1250.0}).action.offer_code == "PRICEY"  # exactly 20%
    # no lifetime value: the value is ARPU × the offer's horizon, and the reason says so
    by_arpu = run(snap, {"arpu": 50.0})
    assert by_arpu.reasons[0].message == (
        "costs 250.00, more than 20% of the subscriber's value 600.00 (no "
        "lifetime value on the profile: ARPU × 12 months)"
    )


def test_ltv_share_is_the_strictest_among_budgets_in_scope():
    snap = snapshot(
        [offer("A", 150.0, uplift=0.9)],
        budgets=[
            {
                "code": "SMS",
                "scope_type": "channel",
                "scope_value": "sms",
                "cap_amount": 1e6,
                "max_cost_share_of_ltv": 0.1,
            }
        ],
    )
    assert run(snap, channel="sms").reason_codes == {"A": "ltv_cap"}
    assert run(snap, channel="app").action.offer_code == "A"


def test_value_falls_back_to_arpu_times_horizon_and_no_value_is_a_reason():
    snap = snapshot([offer("A", 2.0, uplift=0.05, horizon=6)])
    assert run(snap, {"arpu": 40.0}).score == pytest.approx(0.05 * 40 * 6 - 2.0)
    assert run(snap, {"churn_score": 0.3}).reason_codes == {"A": "no_value"}
    assert run(snap, {"ltv": "1000"}).reason_codes == {"A": "no_value"}  # text is not money


def test_tier_policy_refusal_with_its_note_and_default_allow_without_a_row():
    policies = [
        {"tier_code": "basic", "offer_code": "MANAGER", "allowed": False},
        {"tier_code": "vip", "offer_code": "MANAGER", "allowed": True},
        {
            "tier_code": "basic",
            "offer_code": "CREDIT",
            "allowed": False,
            "note": "Basic tier gets discount packages only.",
        },
    ]
    snap = snapshot([offer("MANAGER", 5.0), offer("CREDIT", 5.0), offer("UNLISTED", 5.0)], tier_policies=policies)
    result = run(snap)
    assert result.tier == "basic"
    assert result.reason_codes == {"MANAGER": "tier_not_allowed", "CREDIT": "tier_not_allowed"}
    messages = {r.offer_code: r.message for r in result.reasons}
    assert messages == {
        "MANAGER": "not offered to the Basic tier (only VIP)",
        "CREDIT": "Basic tier gets discount packages only.",
    }
    assert result.action.offer_code == "UNLISTED"  # no row: allowed with the defaults
    assert run(snap, {**PROFILE, "arpu": 150.0}).reason_codes["CREDIT"] == "lower_score"


def test_authority_limit_of_the_tier():
    snap = snapshot(
        [offer("CREDIT", 30.0, uplift=0.9, channels=("call_centre",))],
        tier_policies=[{"tier_code": "basic", "offer_code": "CREDIT", "max_cost": 20.0, "granted_by": "agent"}],
    )
    result = run(snap, channel="call_centre")
    assert result.reasons == (
        ("CREDIT", "over_authority", "costs 30.00, above the Basic tier's authority limit of 20.00 (agent)"),
    )


def test_granted_by_travels_with_the_action():
    snap = snapshot(
        [offer("CREDIT", 10.0, channels=("call_centre",))],
        tier_policies=[
            {"tier_code": "basic", "offer_code": "CREDIT", "max_cost": 20.0, "granted_by": "account_manager"}
        ],
    )
    assert run(snap, channel="call_centre").action.granted_by == "account_manager"


def test_channel_not_supported_and_not_eligible():
    snap = snapshot([offer("APP_ONLY", channels=("app",)), offer("LOYAL", eligibility={"tenure_months": {"$gte": 12}})])
    result = run(snap, channel="sms")
    assert result.reasons == (
        ("APP_ONLY", "channel_not_supported", "delivered by app, not by sms"),
        ("LOYAL", "not_eligible", "does not meet the offer's eligibility rule"),
    )
    assert run(snap, {**PROFILE, "tenure_months": 12}).action.offer_code == "LOYAL"


def test_context_wins_over_the_stored_profile():
    snap = snapshot([offer("CANCEL_SAVE", eligibility={"intent": "cancel"})])
    assert run(snap, {**PROFILE, "intent": "browse"}).action is None
    assert run(snap, {**PROFILE, "intent": "browse"}, context={"intent": "cancel"}).action.offer_code == "CANCEL_SAVE"


def test_tier_and_risk_level_are_attributes_for_eligibility():
    snap = snapshot(
        [offer("RED_CALL", eligibility={"risk_level": "red"}), offer("VIP_ONLY", eligibility={"tier": "vip"})]
    )
    result = run(snap, {**PROFILE, "churn_score": 0.8})
    assert (result.risk_level, result.action.offer_code) == ("red", "RED_CALL")
    assert result.reason_codes == {"VIP_ONLY": "not_eligible"}
    assert run(snap, {**PROFILE, "arpu": 120.0}).action.offer_code == "VIP_ONLY"


def test_contact_cap_blocks_every_offer_on_the_channel():
    snap = snapshot(
        [offer("A"), offer("B", channels=("app",))],
        contact_policies=[{"channel": "sms", "max_contacts": 3, "window_days": 7}],
    )
    result = run(snap, state=DecisionState(contacts_in_window={"sms": 3}))
    assert result.action is None
    assert result.reasons == (
        ("A", "contact_cap", "3 contacts by sms in the last 7 days (cap 3)"),
        ("B", "channel_not_supported", "delivered by app, not by sms"),
    )
    assert run(snap, state=DecisionState(contacts_in_window={"sms": 2})).action.offer_code == "A"


def test_quiet_hours_in_the_subscribers_time_zone_else_the_policys():
    snap = snapshot(
        [offer("A", channels=("sms", "retail"))],
        contact_policies=[
            {
                "channel": "sms",
                "max_contacts": 9,
                "window_days": 30,
                "quiet_start": "21:00",
                "quiet_end": "08:00",
                "timezone": "Asia/Shanghai",
            },
            {"channel": "retail", "max_contacts": 9, "window_days": 30},
        ],
    )
    late = datetime(2025, 3, 4, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai, 14:30 in London
    result = run(snap, now=late)
    assert result.reasons == (("A", "quiet_hours", "sms quiet hours 21:00–08:00; it is 22:30 for the subscriber"),)
    early = datetime(2025, 3, 3, 23, 59, tzinfo=UTC)  # 07:59 in Shanghai: still quiet
    assert run(snap, now=early).reason_codes == {"A": "quiet_hours"}
    assert run(snap, now=early + timedelta(minutes=1)).action.offer_code == "A"  # 08:00: quiet hours end
    assert run(snap, {**PROFILE, "timezone": "Europe/London"}, now=late).action.offer_code == "A"
    assert run(snap, {"arpu": 40.0, "ltv": 1000.0}, now=late).reason_codes == {"A": "quiet_hours"}
    assert run(snap, now=late, channel="retail").action.offer_code == "A"  # no quiet hours in the shop


def test_budget_exhausted_lets_a_cheaper_offer_through():
    snap = snapshot(
        [offer("DEAR", 10.0, uplift=0.1), offer("CHEAP", 2.0, uplift=0.01)],
        budgets=[{"code": "FUND", "scope_type": "programme", "cap_amount": 100.0}],
    )
    result = run(snap, state=DecisionState(spent_by_budget={"FUND": 95.0}))
    assert result.action.offer_code == "CHEAP"
    assert result.reasons == (
        ("DEAR", "budget_exhausted", "budget FUND has 5.00 left of 100.00; the offer costs 10.00"),
    )
    assert result.budgets_to_reserve == ("FUND",)
    assert run(snap, state=DecisionState(spent_by_budget={"FUND": 90.0})).action.offer_code == "DEAR"  # exactly the cap


def test_pacing_allows_the_elapsed_share_of_the_cap_plus_slack():
    # a third of the period gone: 300 × 1/3 × 1.1 = 110 may be spent by now
    budget = {
        "code": "FUND",
        "scope_type": "programme",
        "cap_amount": 300.0,
        "period_start": NOW - timedelta(days=10),
        "period_end": NOW + timedelta(days=20),
    }
    snap = snapshot([offer("A", 2.0)], budgets=[budget])
    result = run(snap, state=DecisionState(spent_by_budget={"FUND": 109.0}))
    assert result.reasons == (
        (
            "A",
            "pacing",
            "budget FUND is paced: 110.00 may be spent by now this period and "
            "109.00 is; the offer's 2.00 would go past it",
        ),
    )
    assert run(snap, state=DecisionState(spent_by_budget={"FUND": 108.0})).action.offer_code == "A"
    assert run(snap, state=DecisionState(spent_by_budget={"FUND": 299.0})).reason_codes == {"A": "budget_exhausted"}


def test_budget_periods_are_utc_calendar_periods_and_bound_the_snapshot():
    assert budget_period_bounds("month", NOW) == (
        datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 4, 1, tzinfo=UTC),
    )
    assert budget_period_bounds("quarter", datetime(2025, 12, 31, 23, tzinfo=UTC)) == (
        datetime(2025, 10, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert budget_period_bounds("year", NOW)[1] == datetime(2026, 1, 1, tzinfo=UTC)
    snap = snapshot(
        [offer("A")],
        budgets=[{"code": "FUND", "scope_type": "programme", "cap_amount": 1.0, "period": "month"}],
        now=NOW,
    )
    assert snap.valid_until == datetime(2025, 4, 1, tzinfo=UTC)


def test_degraded_fails_closed_for_paid_offers_only():
    snap = snapshot(
        [offer("PAID", 5.0, uplift=0.1), offer("FREE", 0.0, uplift=0.01)],
        budgets=[{"code": "FUND", "scope_type": "programme", "cap_amount": 1e6}],
    )
    result = run(snap, state=DecisionState(degraded=True))
    assert result.degraded is True
    assert result.reason_codes["PAID"] == "degraded"
    assert result.action.offer_code == "FREE" and result.budgets_to_reserve == ()
    assert run(snap).action.offer_code == "PAID"


def test_unreadable_spend_is_treated_as_exhausted():
    snap = snapshot([offer("A", 2.0)], budgets=[{"code": "FUND", "scope_type": "programme", "cap_amount": 100.0}])
    assert run(snap, state=DecisionState(spent_by_budget={"FUND": float("nan")})).reason_codes == {
        "A": "budget_exhausted"
    }


def test_budgets_to_reserve_are_every_budget_in_scope():
    budgets = [
        {"code": "FUND", "scope_type": "programme", "cap_amount": 1e6},
        {"code": "VIP", "scope_type": "tier", "scope_value": "vip", "cap_amount": 1e6},
        {"code": "BASIC", "scope_type": "tier", "scope_value": "basic", "cap_amount": 1e6},
        {"code": "SMS", "scope_type": "channel", "scope_value": "sms", "cap_amount": 1e6},
        {"code": "TEST", "scope_type": "experiment", "scope_value": "some-test", "cap_amount": 1e6},
        {"code": "OLD", "scope_type": "programme", "cap_amount": 0.0, "active": False},
    ]
    snap = snapshot([offer("A", 2.0)], budgets=budgets)
    assert run(snap).budgets_to_reserve == ("BASIC", "FUND", "SMS")
    assert run(snap, channel="app").budgets_to_reserve == ("BASIC", "FUND")


def test_every_offer_has_exactly_one_reason_or_is_the_action():
    snap = snapshot([offer(f"O{i}", float(i), uplift=0.004 * i, eligibility={"x": {"$gte": i % 3}}) for i in range(12)])
    result = run(snap, {**PROFILE, "x": 1})
    codes = [reason.offer_code for reason in result.reasons]
    assert len(codes) == len(set(codes)) == 11 and result.action.offer_code not in codes


def test_decisions_are_deterministic_and_ignore_experiment_order():
    offers = [offer("A"), offer("B", 1.0)]
    experiments = [
        experiment("exp-a", [("control", None), ("a", "A")]),
        experiment("exp-b", [("control", None), ("b", "B")]),
    ]
    one, two = snapshot(offers, experiments=experiments), snapshot(offers, experiments=experiments[::-1])
    for n in range(50):
        assert run(one, subscriber=f"s-{n}") == run(one, subscriber=f"s-{n}") == run(two, subscriber=f"s-{n}")


# --- experiments -------------------------------------------------------------------------------

ARMS = [("control", None), ("pack", "PACK")]


def two_offer_snapshot(*experiments: dict, **config: Any):
    # arbitration would choose BEST; experiments give PACK or nothing
    return snapshot(
        [offer("BEST", 2.0, uplift=0.2), offer("PACK", 1.0, uplift=0.01)], experiments=list(experiments), **config
    )


def test_experiment_arm_overrides_arbitration():
    exp = experiment("pack-test", ARMS)
    snap = two_offer_snapshot(exp)
    spec = snap.experiments[0].spec
    subscriber = subscriber_where(lambda s: assign(spec, s).arm_key == "pack")
    result = run(snap, subscriber=subscriber)
    assert result.action.offer_code == "PACK"
    assert (
        result.experiment.key,
        result.experiment.arm_key,
        result.experiment.in_holdout,
        result.experiment.new_exposure,
    ) == ("pack-test", "pack", False, True)
    assert result.reasons == (
        ("BEST", "experiment_override", "experiment pack-test decides for this subscriber (arm pack)"),
    )
    assert result.probability == 0.5 and result.score is None


def test_control_arm_is_no_action():
    snap = two_offer_snapshot(experiment("pack-test", ARMS))
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "control")
    result = run(snap, subscriber=subscriber)
    assert result.action is None and result.experiment.arm_key == "control"
    assert result.reason_codes == {"BEST": "experiment_override", "PACK": "experiment_override"}


def test_holdout_is_no_action_with_the_holdout_share_as_probability():
    snap = two_offer_snapshot(experiment("pack-test", ARMS, holdout=0.2))
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).in_holdout)
    result = run(snap, subscriber=subscriber)
    assert result.action is None
    assert (result.experiment.arm_key, result.experiment.in_holdout) == (None, True)
    assert result.experiment.as_json() == {"key": "pack-test", "arm": None, "in_holdout": True}
    assert result.probability == pytest.approx(0.2)
    assert result.reasons[0].message == "subscriber is in experiment pack-test's holdout: no action"
    in_arm = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "pack")
    assert run(snap, subscriber=in_arm).probability == pytest.approx(0.8 * 0.5)


def test_arm_probability_counts_coverage_weights_and_namespace():
    exp = experiment("pack-test", ARMS, coverage=0.5, namespace="ns", namespace_start=0.2, namespace_end=0.6)
    exp["arms"][1]["weight"] = 3
    live = two_offer_snapshot(exp).experiments[0]
    assert live.arm_probability("pack", False, None) == pytest.approx(0.4 * 0.5 * 0.75)
    assert live.arm_probability("control", False, None) == pytest.approx(0.4 * 0.5 * 0.25)


def test_subscribers_outside_target_or_coverage_get_arbitration():
    snap = two_offer_snapshot(experiment("pack-test", ARMS, target={"churn_score": {"$gte": 0.5}}))
    result = run(snap, subscriber=subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "pack"))
    assert result.experiment is None and result.action.offer_code == "BEST"
    snap = two_offer_snapshot(experiment("pack-test", ARMS, coverage=0.05))
    outside = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).reason == "not_covered")
    assert run(snap, subscriber=outside).action.offer_code == "BEST"


def test_recorded_arm_wins_over_the_hash_and_the_target():
    snap = two_offer_snapshot(experiment("pack-test", ARMS, target={"churn_score": {"$gte": 0.5}}))
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "control")
    state = DecisionState(sticky_arms={"pack-test": ("pack", False)})
    result = run(snap, subscriber=subscriber, state=state)  # no longer targeted: stays in the arm
    assert result.action.offer_code == "PACK"
    assert (result.experiment.arm_key, result.experiment.new_exposure) == ("pack", False)
    held = run(snap, subscriber=subscriber, state=DecisionState(sticky_arms={"pack-test": (None, True)}))
    assert held.action is None and held.experiment.in_holdout


def test_a_recorded_arm_in_a_later_experiment_wins_over_hashing_into_an_earlier_one():
    # "a-new" sorts first and would place every subscriber (full coverage, no target); the
    # subscriber was already given an arm in "pack-test": they stay there
    snap = two_offer_snapshot(experiment("a-new", [("control", None), ("best", "BEST")]), experiment("pack-test", ARMS))
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "control")
    result = run(snap, subscriber=subscriber, state=DecisionState(sticky_arms={"pack-test": ("pack", False)}))
    assert (result.experiment.key, result.experiment.arm_key, result.action.offer_code) == ("pack-test", "pack", "PACK")
    assert result.experiment.new_exposure is False
    fresh = run(snap, subscriber=subscriber)  # recorded nowhere: the first experiment places them
    assert (fresh.experiment.key, fresh.experiment.new_exposure, fresh.action) == ("a-new", True, None)


def test_recorded_arms_of_ended_experiments_are_ignored():
    snap = two_offer_snapshot(experiment("pack-test", ARMS, status="completed"))
    result = run(snap, state=DecisionState(sticky_arms={"pack-test": ("pack", False)}))
    assert result.experiment is None and result.action.offer_code == "BEST"


def test_rollout_gives_new_subscribers_the_winner_or_their_tiers_winner():
    arms = [("control", None), ("pack", "PACK"), ("best", "BEST")]
    exp = experiment(
        "pack-test", arms, status="rollout", holdout=0.1, winner_arm_key="pack", tier_winners={"vip": "best"}
    )
    snap = two_offer_snapshot(exp)
    spec = snap.experiments[0].spec
    subscriber = subscriber_where(lambda s: assign(spec, s).arm_key == "control")
    result = run(snap, subscriber=subscriber)
    assert (result.experiment.arm_key, result.action.offer_code) == ("pack", "PACK")
    assert result.probability == pytest.approx(0.9)  # everyone covered and not held out
    vip = run(snap, {**PROFILE, "arpu": 150.0}, subscriber=subscriber)
    assert (vip.tier, vip.experiment.arm_key, vip.action.offer_code) == ("vip", "best", "BEST")
    # exposed during the pilot: keeps the control arm
    sticky = run(snap, subscriber=subscriber, state=DecisionState(sticky_arms={"pack-test": ("control", False)}))
    assert sticky.action is None and sticky.experiment.arm_key == "control"
    held = subscriber_where(lambda s: assign(spec, s).in_holdout)
    assert run(snap, subscriber=held).action is None


def test_first_experiment_by_key_decides():
    snap = two_offer_snapshot(
        experiment("b-second", [("control", None), ("best", "BEST")]), experiment("a-first", ARMS)
    )
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "pack")
    assert [e.key for e in snap.experiments] == ["a-first", "b-second"]
    assert run(snap, subscriber=subscriber).experiment.key == "a-first"


@pytest.mark.parametrize(
    ("config", "state", "channel", "code"),
    [
        ({}, DecisionState(contacts_in_window={"sms": 5}), "sms", "contact_cap"),
        ({}, None, "retail", "channel_not_supported"),
        ({}, DecisionState(degraded=True), "sms", "degraded"),
        ({"spending_paused": True}, None, "sms", "spending_paused"),
        ({"budget_code": "TEST"}, DecisionState(spent_by_budget={"TEST": 49.5}), "sms", "budget_exhausted"),
    ],
)
def test_an_arm_that_cannot_be_delivered_is_no_action_with_the_reason(config, state, channel, code):
    exp = experiment("pack-test", ARMS, **config)
    snap = two_offer_snapshot(
        exp,
        contact_policies=[{"channel": "sms", "max_contacts": 5, "window_days": 30}],
        budgets=[{"code": "TEST", "scope_type": "experiment", "scope_value": "pack-test", "cap_amount": 50.0}],
    )
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "pack")
    result = run(snap, subscriber=subscriber, state=state, channel=channel)
    assert result.action is None and result.experiment.arm_key == "pack"
    assert result.reasons[0][:2] == ("PACK", code)
    assert result.reason_codes["BEST"] == "experiment_override"


def test_arm_ignores_eligibility_tier_policy_and_roi_but_reserves_its_budget():
    exp = experiment("pack-test", ARMS, budget_code="TEST")
    snap = snapshot(
        [offer("BEST", 2.0, uplift=0.2), offer("PACK", 1.0, uplift=0.0, eligibility={"never": True})],
        experiments=[exp],
        tier_policies=[{"tier_code": "basic", "offer_code": "PACK", "allowed": False}],
        budgets=[
            {"code": "TEST", "scope_type": "experiment", "scope_value": "pack-test", "cap_amount": 50.0},
            {"code": "FUND", "scope_type": "programme", "cap_amount": 50.0},
        ],
    )
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "pack")
    result = run(snap, subscriber=subscriber)
    assert result.action.offer_code == "PACK"
    assert result.budgets_to_reserve == ("FUND", "TEST")


def test_free_arm_is_delivered_while_degraded_or_paused():
    snap = snapshot(
        [offer("BEST", 2.0, uplift=0.2), offer("SMS", 0.0, uplift=0.01)],
        experiments=[experiment("sms-test", [("control", None), ("sms", "SMS")], spending_paused=True)],
    )
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "sms")
    result = run(snap, subscriber=subscriber, state=DecisionState(degraded=True))
    assert result.action.offer_code == "SMS" and result.degraded and result.budgets_to_reserve == ()


def test_arm_offering_an_inactive_offer_is_no_action():
    snap = snapshot([offer("BEST", 2.0), offer("PACK", 1.0, active=False)], experiments=[experiment("pack-test", ARMS)])
    subscriber = subscriber_where(lambda s: assign(snap.experiments[0].spec, s).arm_key == "pack")
    result = run(snap, subscriber=subscriber)
    assert result.action is None and result.reasons[0][:2] == ("PACK", "offer_inactive")


def test_experiment_spec_matches_the_services_spec():
    from experiments.models import Experiment, ExperimentArm
    from experiments.service import experiment_spec

    row = experiment(
        "k",
        [("a", None), ("b", "X")],
        coverage=0.3,
        holdout=0.1,
        hash_version=2,
        namespace="ns",
        namespace_start=0.1,
        namespace_end=0.6,
    )
    row["arms"][1]["weight"] = 3
    orm = Experiment(
        key="k",
        hash_seed="k",
        hash_version=2,
        coverage=0.3,
        holdout_share=0.1,
        namespace="ns",
        namespace_start=0.1,
        namespace_end=0.6,
        arms=[
            ExperimentArm(key="b", offer_code="X", weight=3, position=1),
            ExperimentArm(key="a", weight=1, position=0),
        ],
    )
    assert experiment_spec_from_row(row) == experiment_spec(orm)


# --- the brief's triggers, on the demo catalogue ---------------------------------------------


@pytest.fixture(scope="module")
def demo():
    snap = build_snapshot(
        version=1,
        offers=demo_seed.OFFERS,
        tiers=demo_seed.TIERS,
        primary_scheme="value_tiers",
        tier_policies=list(demo_seed.tier_policy_rows()),
        contact_policies=demo_seed.CONTACT_POLICIES,
        budgets=demo_seed.BUDGETS,
        now=NOW,
        period_revenue=1_000_000.0,
    )
    profiles = {profile["showcase"]: (subscriber, profile) for subscriber, profile in demo_seed.demo_profiles(NOW, 12)}
    return snap, profiles


def demo_run(demo, name: str, channel: str, context: dict | None = None, now: datetime = NOW):
    snap, profiles = demo
    subscriber, profile = profiles[name]
    return decide(snap, DecisionRequest(subscriber, channel, profile, context or {}), DecisionState(), now)


def test_heavy_late_night_data_use_triggers_the_night_pack(demo):
    assert demo_run(demo, "growth-night-owl", "app").action.offer_code == "NIGHT_DATA_PACK"
    daytime_user = demo_run(demo, "growth-night-owl", "app", {"night_data_share": 0.1})
    assert daytime_user.reason_codes["NIGHT_DATA_PACK"] == "not_eligible"


def test_broadband_tenure_over_three_years_triggers_the_gigabit_upgrade(demo):
    result = demo_run(demo, "loyal-broadband", "app")
    assert (result.tier, result.action.offer_code) == ("value", "GIGABIT_UPGRADE")
    assert result.budgets_to_reserve == ("RETENTION_FUND",)
    exactly_three_years = demo_run(demo, "loyal-broadband", "app", {"broadband_tenure_months": 36})
    assert exactly_three_years.reason_codes["GIGABIT_UPGRADE"] == "not_eligible"


def test_birthday_triggers_the_birthday_privilege(demo):
    assert demo_run(demo, "birthday-today", "sms").action.offer_code == "BIRTHDAY_PRIVILEGE"
    tomorrow = demo_run(demo, "birthday-today", "sms", now=NOW + timedelta(days=1))
    assert tomorrow.reason_codes["BIRTHDAY_PRIVILEGE"] == "not_eligible"


def test_new_joiner_gets_the_guide_within_72_hours(demo):
    # the showcase joiner (joined 20 h ago) spends 25/month: basic tier, whose benefits are
    # limited to discount packages; the guide is a service touch every tier gets
    joined = demo_run(demo, "new-joiner", "sms")
    assert (joined.tier, joined.action.offer_code) == ("basic", "NEW_USER_GUIDE")
    at_72_hours = demo_run(demo, "new-joiner", "sms", now=NOW + timedelta(hours=52))
    assert at_72_hours.action.offer_code == "NEW_USER_GUIDE"
    after = demo_run(demo, "new-joiner", "sms", now=NOW + timedelta(hours=53))
    assert after.reason_codes["NEW_USER_GUIDE"] == "not_eligible"
    assert after.reason_codes["LOYALTY_POINTS"] == "tier_not_allowed"  # a benefit: not for basic


@pytest.mark.parametrize(
    ("showcase", "offer_code"),
    [
        ("churned-price", "WINBACK_DISCOUNT"),
        ("churned-experience", "WINBACK_SPEED_BOOST"),
        ("churned-needs-changed", "WINBACK_NEW_BUNDLE"),
    ],
)
def test_win_back_follows_the_churn_reason_in_the_basic_tier_churned_subscribers_fall_in(demo, showcase, offer_code):
    result = demo_run(demo, showcase, "call_centre")
    assert result.tier == "basic"  # a churned subscriber spends nothing
    assert result.reason_codes.get(offer_code) != "tier_not_allowed"
    assert result.action is not None and result.action.offer_code == offer_code, result.reason_codes


def test_demo_vip_gets_the_account_manager_by_call_centre_and_spends_the_vip_budget(demo):
    result = demo_run(demo, "vip-strategic", "call_centre")
    assert result.action.offer_code == "ACCOUNT_MANAGER" and result.action.granted_by == "account_manager"
    assert result.budgets_to_reserve == ("RETENTION_FUND", "VIP_CARE")


# --- the response and bad input ----------------------------------------------------------------


def test_as_json_has_the_design_shape():
    snap = snapshot([offer("A", 2.0), offer("B", channels=("app",))])
    body = run(snap, {**PROFILE, "churn_score": 0.5}).as_json("d-1")
    assert list(body) == [
        "decision_id",
        "subscriber_id",
        "channel",
        "tier",
        "risk_level",
        "risk_reasons",
        "action",
        "experiment",
        "reasons",
        "probability",
        "degraded",
    ]
    assert body["action"] == {"offer_code": "A", "name": "A", "cost": 2.0, "granted_by": "automatic"}
    assert body["reasons"] == [
        {"offer_code": "B", "code": "channel_not_supported", "message": "delivered by app, not by sms"}
    ]
    assert body["risk_level"] == "yellow"
    assert body["risk_reasons"] == [
        {"code": "churn_score_yellow", "message": "churn score at or above the yellow threshold (0.4)"}
    ]
    json.dumps(body)  # serialisable as it is


def test_answers_share_no_reason_list_and_keep_their_own_formatted_reasons():
    """Reasons without arguments are built once per process; each answer still has its own
    list (the service inserts refusals into it) and its own formatted reasons."""
    snap = snapshot([offer("A", 2.0), offer("B", channels=("app",)), offer("C", 900.0)])
    first, second = (run(snap, PROFILE).as_json() for _ in range(2))
    assert first["reasons"] == second["reasons"] and first["reasons"] is not second["reasons"]
    first["reasons"].insert(0, {"offer_code": "A", "code": "contact_cap", "message": "refused"})
    assert [r["code"] for r in second["reasons"]] == [r["code"] for r in first["reasons"][1:]]
    assert "ltv_cap" in {r["code"] for r in second["reasons"]}  # formatted with its figures


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (DecisionRequest("", "sms", PROFILE), "invalid_subscriber_id"),
        (DecisionRequest("x" * 65, "sms", PROFILE), "invalid_subscriber_id"),
        (DecisionRequest(None, "sms", PROFILE), "invalid_subscriber_id"),  # type: ignore[arg-type]  # deliberately wrong: the refusal is under test
        (DecisionRequest("s-1", "", PROFILE), "invalid_channel"),
        (DecisionRequest("s-1", "sms", ["not", "a", "profile"]), "invalid_profile"),  # type: ignore[arg-type]  # deliberately wrong: the refusal is under test
        (DecisionRequest("s-1", "sms", PROFILE, None), "invalid_profile"),  # type: ignore[arg-type]  # deliberately wrong: the refusal is under test
    ],
)
def test_bad_input_gives_an_error_code_not_an_exception(request_, error):
    result = decide(snapshot([offer("A")]), request_, None, NOW)
    assert (result.error, result.action) == (error, None)
    assert result.as_json()["error"] == error


def test_bad_time_and_odd_profile_values_do_not_raise():
    snap = snapshot([offer("A", eligibility={"x": {"$gt": 1}})])
    assert decide(snap, DecisionRequest("s-1", "sms", PROFILE), None, "now").error == "invalid_time"  # type: ignore[arg-type]  # deliberately wrong: the refusal is under test
    odd = {
        "arpu": float("nan"),
        "ltv": -5,
        "churn_score": "high",
        "timezone": "Mars/Olympus",
        "x": [1, 2],
        "join_date": "yesterday",
        "birthday": 19880304,
    }
    result = run(snap, odd, now=datetime(2025, 3, 4, 12, 0))  # naive: UTC
    assert result.error is None and result.reason_codes == {"A": "not_eligible"}


def test_unknown_channel_excludes_every_offer():
    result = run(snapshot([offer("A")]), channel="fax")
    assert result.action is None and result.reason_codes == {"A": "channel_not_supported"}


# --- building the snapshot -----------------------------------------------------------------------


def test_snapshot_accepts_the_demo_seed_rows_and_compiles_each_condition_once(demo):
    snap, _ = demo
    assert len(snap.offers) == len(demo_seed.OFFERS) and snap.version == 1
    assert {b.code: b.cap_amount for b in snap.budgets} == {"RETENTION_FUND": 15_000.0, "VIP_CARE": 600.0}
    assert snap.policy("basic", "BILL_CREDIT").allowed is False
    plan = snap.plan_for("vip", "sms")
    assert plan is snap.plan_for("vip", "sms")  # precomputed, not rebuilt per decision
    assert plan.entries[0][2] is snap.offers[0].eligibility


def test_snapshot_refuses_unusable_configuration():
    with pytest.raises(SnapshotError, match="period's revenue"):
        snapshot([offer("A")], budgets=[{"code": "F", "scope_type": "programme", "cap_share_of_revenue": 0.01}])
    with pytest.raises(SnapshotError, match="HH:MM"):
        snapshot(
            [offer("A")],
            contact_policies=[
                {"channel": "sms", "max_contacts": 1, "window_days": 1, "quiet_start": "9pm", "quiet_end": "08:00"}
            ],
        )
    with pytest.raises(SnapshotError, match="unique"):
        snapshot([offer("A"), offer("A")])
    with pytest.raises(SnapshotError, match="scope_type"):
        snapshot([offer("A")], budgets=[{"code": "F", "scope_type": "region", "cap_amount": 1.0}])
    with pytest.raises(SnapshotError, match="unit_cost"):
        snapshot([offer("A", -1.0)])


def test_the_callers_profile_and_context_are_not_modified():
    profile, context = {**PROFILE, "join_date": "2025-03-01"}, {"intent": "cancel"}
    before = (dict(profile), dict(context))
    run(snapshot([offer("A")]), profile, context=context)
    assert (profile, context) == before


def test_red_risk_makes_the_agent_call_back_eligible_whatever_the_churn_score(demo):
    # the playbooks: blue → care SMS, red → a dedicated agent follow-up. Two churn signals make a
    # quiet score red; the call-back is then eligible although the score is far below 0.6
    signals = {"churn_score": 0.3, "inactive_months": 3, "downgrades_3m": 3}
    red = demo_run(demo, "loyal-broadband", "call_centre", signals)
    assert red.risk_level == "red" and red.reason_codes.get("AGENT_CALLBACK_48H") != "not_eligible"
    quiet = demo_run(demo, "loyal-broadband", "call_centre", {"churn_score": 0.3})
    assert quiet.risk_level == "blue" and quiet.reason_codes["AGENT_CALLBACK_48H"] == "not_eligible"


def test_without_a_time_zone_of_their_own_a_subscribers_day_is_the_channel_policys():
    # 20:00 UTC on 1 March is 04:00 on 2 March in Shanghai, where the sms policy lives
    policy = {"channel": "sms", "max_contacts": 5, "window_days": 7, "timezone": "Asia/Shanghai"}
    snap = snapshot(
        [offer("GIFT", 0.0, eligibility={"is_birthday_today": True}, uplift=0.05)], contact_policies=[policy]
    )
    evening = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)
    result = decide(snap, DecisionRequest("s-1", "sms", {**PROFILE, "birthday": "03-02"}), DecisionState(), evening)
    assert result.action is not None and result.action.offer_code == "GIFT"
    # a subscriber with their own time zone keeps it
    london = decide(
        snap,
        DecisionRequest("s-1", "sms", {**PROFILE, "birthday": "03-02", "timezone": "Europe/London"}),
        DecisionState(),
        evening,
    )
    assert london.reason_codes["GIFT"] == "not_eligible"
