"""The next-best-action decision: one pure function over a config snapshot (DESIGN §4).

Pure: standard library plus the project's pure modules. The service fetches the subscriber's
profile, and from Redis in one round trip the :class:`DecisionState` (contacts per channel,
spend per budget, recorded experiment arms), then calls :func:`decide`; it reserves
``budgets_to_reserve`` and persists the exposure and the decision row afterwards.

The flow:

1. The stored profile merged with the request's context (context wins), plus the contact-time
   attributes (``offers.derived_attributes``: hours_since_join, is_birthday_today,
   local_hour), so the brief's triggers are plain eligibility conditions.
2. Tier (the primary scheme's first matching tier) and risk level (``decisioning.risk``); both
   are put on the profile as ``tier`` and ``risk_level`` for eligibility and experiment targets.
3. Experiments, in key order: a recorded (sticky) arm wins — whatever the target says now, the
   subscriber stays in the arm they were first given (intention to treat, as
   ``experiments.exposures``), and a recorded arm in any experiment comes before hashing into
   another; otherwise a subscriber matching the target is hashed
   (``experiments.assignment.assign``), and in rollout a newly assigned subscriber gets the
   tier's winner or the winner. The first experiment that places the subscriber (in an arm or
   in its holdout) decides: the arm's offer, or no action for the control and the holdout.
   The arm is honoured unless the offer cannot be delivered — inactive, not on this channel,
   contact cap, quiet hours, experiment spending paused, ledger unavailable, or a budget
   exhausted or ahead of pace — and then the answer is no action with that reason (never
   another offer: that would contaminate the arm). Eligibility, tier policy, LTV and ROI rules
   are not applied to arms: the experiment exists to measure the arm on its target.
4. Otherwise arbitration over every active offer; each exclusion keeps one reason, the first
   that applies in this order: channel_not_supported, tier_not_allowed, over_authority (known
   before looking at the subscriber), contact_cap, quiet_hours (the channel cannot take a
   contact now), not_eligible, no_value, ltv_cap, roi_below_floor, and for paid offers
   degraded, budget_exhausted, pacing; then not_positive_score, and lower_score for the
   candidates the winner beat. score = uplift × value × context weight × lever − cost, where
   value is the ``ltv`` attribute or else ``arpu`` × the offer's value horizon; the best
   positive score wins (ties: cheaper, then earlier in the catalogue); no action when none is
   positive.

``probability`` is the probability of the route that decided, the propensity of the logged
treatment: 1.0 for arbitration (deterministic); for an experiment, the chance the hash gives a
subscriber of this tier this arm, or the holdout (``LiveExperiment.arm_probability``: coverage,
namespace share, holdout and weights), which is what the readouts' per-arm comparison rests
on. It is not the sum over every route to the same action: a subscriber the hash leaves out
gets arbitration's action, which an arm may share.

Money: paid offers (cost > 0) spend from every budget in scope; free offers pass the ROI floor,
the ledger and the budgets, but not contact caps or quiet hours. When Redis is unavailable
(``state.degraded``) paid actions fail closed; free ones go on with the contact counts the
service could supply.

Never raises for bad input: a result with ``error`` set (and no action) instead.
"""

from __future__ import annotations

import math
from collections import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from decisioning.risk import RISK_REASON_MESSAGES, assess_risk
from decisioning.snapshot import (
    Action,
    BudgetRule,
    ChannelPlan,
    ContactRule,
    DecisionSnapshot,
    LiveExperiment,
    ReasonFacts,
    channel_list,
)
from experiments.assignment import assign
from offers.derived_attributes import derive_contact_attributes
from offers.instants import as_utc
from offers.time_zones import time_zone

__all__ = [
    "Action",
    "DecisionRequest",
    "DecisionResult",
    "DecisionState",
    "ExperimentOutcome",
    "Reason",
    "cost_within_subscriber_ltv_cap",
    "decide",
]

_MONEY_TOLERANCE = 1e-9  # float sums of cents: 0.1 + 0.2 must not exceed a cap of 0.3
_INFINITY = float("inf")
_NUMBER = (int, float)
MAX_SUBSCRIBER_ID_LENGTH = 64  # the subscribers.id column

# Message templates, formatted only when a reason is read (see ReasonFacts in snapshot.py)
_NO_VALUE = "no lifetime value or ARPU on the profile to value the offer against"
_LTV_CAP = "costs {0:.2f}, more than {1:.0%} of the subscriber's lifetime value {2:.2f}"
_VALUE_CAP = (
    "costs {0:.2f}, more than {1:.0%} of the subscriber's value {2:.2f} (no lifetime value on the "
    "profile: ARPU × {3:g} months)"
)
_ROI_BELOW_FLOOR = "expected ROI {0:.2f} is below the floor of {1:g}"  # {0} rounded down: 1.4995 is 1.49
_DEGRADED = "paid offers are held back while the budget ledger is unavailable"
_BUDGET_EXHAUSTED = "budget {0} has {1:.2f} left of {2:.2f}; the offer costs {3:.2f}"
_PACING = (
    "budget {0} is paced: {2:.2f} may be spent by now this period and {1:.2f} is; the offer's {3:.2f} would go past it"
)
_NOT_POSITIVE = "expected gain {0:.2f} does not exceed the cost {1:.2f}"
_LOWER_SCORE = "scored {0:.2f}; {1} scored {2:.2f}"
_CONTACT_CAP = "{0} contacts by {1} in the last {2} days (cap {3})"
_QUIET_HOURS = "{0} quiet hours {1}–{2}; it is {3:02d}:{4:02d} for the subscriber"
_CHANNEL_NOT_SUPPORTED = "delivered by {0}, not by {1}"
_SPENDING_PAUSED = "experiment {0}'s spending is paused by the ROI alarm: no paid action"
_OFFER_INACTIVE = "arm {0} of experiment {1} offers {2}, which is not an active offer"


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRequest:
    """One contact: who, through which channel, the stored profile and the request's context
    (merged over the profile; context wins)."""

    subscriber_id: str
    channel: str
    profile: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecisionState:
    """What the service fetched from Redis for this subscriber, in one round trip.

    ``contacts_in_window``: contacts per channel within that channel's window.
    ``spent_by_budget``: money spent (reserved) per budget code this period.
    ``degraded``: Redis was unavailable, so spend is unknown: paid actions fail closed.
    ``sticky_arms``: the arm recorded for the subscriber per experiment key, as
    ``(arm_key, in_holdout)`` (arm None in the holdout). The service must pass every recorded
    arm of the running experiments, or a re-seeded phase could hash the subscriber elsewhere.
    """

    contacts_in_window: Mapping[str, int] = field(default_factory=dict)
    spent_by_budget: Mapping[str, float] = field(default_factory=dict)
    degraded: bool = False
    sticky_arms: Mapping[str, tuple[str | None, bool]] = field(default_factory=dict)


_NO_STATE = DecisionState()


# --- the result ----------------------------------------------------------------------------------


class Reason(NamedTuple):
    """Why an offer was not chosen: a stable code and a sentence for a call-centre agent."""

    offer_code: str
    code: str
    message: str


@dataclass(frozen=True)
class ExperimentOutcome:
    """Where the deciding experiment put the subscriber. ``new_exposure``: placed by the hash
    just now (the service records the exposure); False when the recorded arm was used."""

    key: str
    arm_key: str | None
    in_holdout: bool
    new_exposure: bool
    offer_code: str | None  # the arm's offer (None: control or holdout), delivered or not

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "arm": self.arm_key, "in_holdout": self.in_holdout}


@dataclass(frozen=True)
class DecisionResult:
    """The decision. ``excluded`` holds the raw reasons ``(offer_code, code, template, args)``
    — formatted by :attr:`reasons` — for every excluded, overridden or beaten offer.

    ``budgets_to_reserve``: codes of every budget the action's cost must be reserved against
    (empty for no action and for free actions). ``score``: the winner's score in arbitration,
    None otherwise. ``error``: a code for input the core could not decide on
    (``invalid_subscriber_id``, ``invalid_channel``, ``invalid_profile``, ``invalid_time``).
    """

    subscriber_id: str
    channel: str
    snapshot_version: int
    tier: str | None
    risk_level: str
    risk_reasons: tuple[str, ...]
    lifecycle_stage: str | None
    action: Action | None
    experiment: ExperimentOutcome | None
    excluded: tuple[ReasonFacts, ...]
    probability: float
    score: float | None
    budgets_to_reserve: tuple[str, ...]
    cost: float
    degraded: bool
    error: str | None = None
    # the risk reasons' sentences under the snapshot's risk policy (its thresholds)
    risk_messages: Mapping[str, str] = field(default_factory=lambda: RISK_REASON_MESSAGES, repr=False, compare=False)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Every reason with its message formatted."""
        return tuple(
            Reason(code, reason, template.format(*args) if args else template)
            for code, reason, template, args in self.excluded
        )

    @property
    def reason_codes(self) -> dict[str, str]:
        """offer code -> reason code (one reason per offer)."""
        return {code: reason for code, reason, _, _ in self.excluded}

    def as_json(self, decision_id: str | None = None) -> dict[str, Any]:
        """The response body of ``POST /api/v1/decisions`` (DESIGN §7), without the decision
        id unless given (the service assigns it when it writes the decision row)."""
        body: dict[str, Any] = {} if decision_id is None else {"decision_id": decision_id}
        body.update(
            {
                "subscriber_id": self.subscriber_id,
                "channel": self.channel,
                "tier": self.tier,
                "risk_level": self.risk_level,
                "risk_reasons": [
                    {"code": code, "message": self.risk_messages.get(code, code)} for code in self.risk_reasons
                ],
                "action": self.action.as_json() if self.action is not None else None,
                "experiment": self.experiment.as_json() if self.experiment is not None else None,
                "reasons": [_reason_json(facts) for facts in self.excluded],
                "probability": self.probability,
                "degraded": self.degraded,
            }
        )
        if self.error is not None:
            body["error"] = self.error
        return body


# Reasons without arguments (not eligible, tier not allowed, channel not supported: most of an
# answer's reasons) repeat from answer to answer: their JSON is built once per process. The
# key is the facts tuple itself, so the cache is bounded by the catalogue's offers × reasons
# and follows it when a new snapshot brings new facts.
_STATIC_REASONS: dict[ReasonFacts, dict[str, str]] = {}
_STATIC_REASONS_MAX = 10_000


def _reason_json(facts: ReasonFacts) -> dict[str, str]:
    """One reason as the answer gives it. Shared between answers when it has no arguments:
    callers must not change the dict (``decisioning.service`` inserts new reasons, never
    edits one)."""
    code, reason, template, args = facts
    if args:
        return {"offer_code": code, "code": reason, "message": template.format(*args)}
    cached = _STATIC_REASONS.get(facts)
    if cached is None:
        if len(_STATIC_REASONS) >= _STATIC_REASONS_MAX:
            _STATIC_REASONS.clear()  # old snapshots' facts; the current ones come back at once
        cached = _STATIC_REASONS[facts] = {"offer_code": code, "code": reason, "message": template}
    return cached


_Choice = tuple[
    Action | None, tuple[BudgetRule, ...], ExperimentOutcome | None, tuple[ReasonFacts, ...], float, float | None
]
"""What an experiment or arbitration chose, which ``decide`` makes the result of: (action,
the budgets its cost is reserved against, the experiment's outcome, reasons, probability,
score)."""


# --- the decision ------------------------------------------------------------------------------


def decide(
    snapshot: DecisionSnapshot, request: DecisionRequest, state: DecisionState | None, now: datetime
) -> DecisionResult:
    """The next-best action for one contact (module docstring). Deterministic: the same
    snapshot, request, state and ``now`` give the same result. ``now`` without a time zone
    is UTC. Never raises on bad input; see ``DecisionResult.error``."""
    state = state if state is not None else _NO_STATE
    subscriber_id, channel = request.subscriber_id, request.channel
    profile, context = request.profile, request.context
    error = _input_error(subscriber_id, channel, profile, context, now)
    if error is not None:
        return _rejected(snapshot, request, state, error)
    now_utc = now if now.tzinfo is UTC else as_utc(now)

    rule = snapshot.contact_rules.get(channel)
    # a subscriber without a time zone of their own lives in the channel policy's, as its quiet
    # hours do: their birthday and local hour are counted there (derived_attributes uses now's zone)
    attributes = derive_contact_attributes(
        {**profile, **context} if context else profile, now_utc.astimezone(rule.zone) if rule is not None else now
    )
    tier = snapshot.tier_assigner.assign(attributes).tier
    risk = assess_risk(attributes, snapshot.risk_policy)
    attributes["tier"] = tier
    attributes["risk_level"] = risk.level
    stage = attributes.get("lifecycle_stage")
    stage = stage if type(stage) is str else None

    plan = snapshot.plan_for(tier, channel)
    blocked = _channel_block(rule, channel, attributes, state, now_utc)

    # a recorded arm in any experiment first: hashing into an earlier-keyed experiment must not
    # take a subscriber out of the arm another experiment already gave them (intention to treat)
    choice: _Choice | None = None
    sticky = state.sticky_arms
    for recorded_only in (True, False) if sticky else (False,):
        for experiment in snapshot.experiments:
            recorded = sticky.get(experiment.key)
            if recorded_only and recorded is None:
                continue
            placement = _placement(experiment, subscriber_id, attributes, tier, recorded)
            if placement is not None:
                choice = _experiment_choice(
                    snapshot, plan, experiment, placement, request, state, now_utc, tier, blocked
                )
                break
        if choice is not None:
            break
    if choice is None:
        choice = _arbitration_choice(plan, state, now_utc, attributes, blocked)
    action, budgets, outcome, excluded, probability, score = choice
    return DecisionResult(
        subscriber_id=subscriber_id,
        channel=channel,
        snapshot_version=snapshot.version,
        tier=tier,
        risk_level=risk.level,
        risk_reasons=risk.reasons,
        lifecycle_stage=stage,
        action=action,
        experiment=outcome,
        excluded=excluded,
        probability=probability,
        score=score,
        budgets_to_reserve=tuple(b.code for b in budgets) if action is not None and action.cost > 0 else (),
        cost=action.cost if action is not None else 0.0,
        degraded=bool(state.degraded),
        risk_messages=snapshot.risk_policy.messages,
    )


def _input_error(subscriber_id: Any, channel: Any, profile: Any, context: Any, now: Any) -> str | None:
    if type(subscriber_id) is not str or not subscriber_id or len(subscriber_id) > MAX_SUBSCRIBER_ID_LENGTH:
        return "invalid_subscriber_id"
    if type(channel) is not str or not channel:
        return "invalid_channel"
    if not (type(profile) is dict or isinstance(profile, abc.Mapping)) or not (
        type(context) is dict or isinstance(context, abc.Mapping)
    ):
        return "invalid_profile"
    if not isinstance(now, datetime):
        return "invalid_time"
    return None


def _rejected(snapshot: DecisionSnapshot, request: DecisionRequest, state: DecisionState, error: str) -> DecisionResult:
    return DecisionResult(
        subscriber_id=request.subscriber_id if type(request.subscriber_id) is str else "",
        channel=request.channel if type(request.channel) is str else "",
        snapshot_version=snapshot.version,
        tier=None,
        risk_level="blue",
        risk_reasons=(),
        lifecycle_stage=None,
        action=None,
        experiment=None,
        excluded=(),
        probability=1.0,
        score=None,
        budgets_to_reserve=(),
        cost=0.0,
        degraded=bool(state.degraded),
        error=error,
    )


def _channel_block(
    rule: ContactRule | None, channel: str, attributes: Mapping[str, Any], state: DecisionState, now_utc: datetime
) -> tuple[str, str, tuple[object, ...]] | None:
    """(code, template, args) when the channel cannot take a contact now: its cap is reached
    or it is quiet hours where the subscriber is (their ``timezone``, else the policy's)."""
    if rule is None:
        return None
    contacts = state.contacts_in_window.get(channel, 0)
    if type(contacts) is int and contacts >= rule.max_contacts:
        return "contact_cap", _CONTACT_CAP, (contacts, channel, rule.window_days, rule.max_contacts)
    if rule.quiet_minutes is None:
        return None
    zone = time_zone(attributes.get("timezone")) or rule.zone
    local = now_utc.astimezone(zone)
    if rule.is_quiet(local.hour * 60 + local.minute):
        return "quiet_hours", _QUIET_HOURS, (channel, rule.quiet_start, rule.quiet_end, local.hour, local.minute)
    return None


# --- experiments ---------------------------------------------------------------------------------


def _placement(
    experiment: LiveExperiment, subscriber_id: str, attributes: Mapping[str, Any], tier: str | None, recorded: Any
) -> tuple[str | None, bool, bool] | None:
    """(arm_key, in_holdout, new_exposure) if the experiment decides for the subscriber."""
    if type(recorded) is tuple and len(recorded) == 2:
        arm_key, in_holdout = recorded
        return (None, True, False) if in_holdout else (arm_key, False, False)
    if not experiment.target(attributes):
        return None
    assignment = assign(experiment.spec, subscriber_id)
    if assignment.in_holdout:
        return None, True, True
    if not assignment.in_experiment:
        return None
    arm_key = experiment.rollout_arm(tier) if experiment.rolled_out else assignment.arm_key
    return arm_key, False, True


def _experiment_choice(
    snapshot: DecisionSnapshot,
    plan: ChannelPlan,
    experiment: LiveExperiment,
    placement: tuple[str | None, bool, bool],
    request: DecisionRequest,
    state: DecisionState,
    now_utc: datetime,
    tier: str | None,
    blocked: tuple[str, str, tuple[object, ...]] | None,
) -> _Choice:
    arm_key, in_holdout, new_exposure = placement
    arm_offer = experiment.arm_offers.get(arm_key) if arm_key is not None else None
    overridden = snapshot.experiment_override_reasons.get((experiment.key, arm_key))
    if overridden is None:  # a recorded arm the snapshot does not know: override everything
        overridden = tuple(
            (offer.code, "experiment_override", "experiment {0} decides for this subscriber", (experiment.key,))
            for offer in snapshot.offers
            if offer.code != arm_offer
        )
    outcome = ExperimentOutcome(experiment.key, arm_key, in_holdout, new_exposure, arm_offer)
    action: Action | None = None
    failure: ReasonFacts | None = None
    budgets: tuple[BudgetRule, ...] = ()
    if arm_offer is not None:
        offer = snapshot.offers_by_code.get(arm_offer)
        if offer is None:
            failure = (arm_offer, "offer_inactive", _OFFER_INACTIVE, (arm_key, experiment.key, arm_offer))
        elif request.channel not in offer.channels:
            failure = (
                arm_offer,
                "channel_not_supported",
                _CHANNEL_NOT_SUPPORTED,
                (channel_list(offer.channels), request.channel),
            )
        elif blocked is not None:
            failure = (arm_offer, *blocked)
        elif offer.unit_cost > 0:
            budgets = plan.budgets
            extra = snapshot.budgets_by_code.get(experiment.budget_code or "")
            if extra is not None and extra not in budgets:
                budgets = tuple(sorted((*budgets, extra), key=lambda b: b.code))
            if experiment.spending_paused:
                failure = (arm_offer, "spending_paused", _SPENDING_PAUSED, (experiment.key,))
            elif state.degraded:
                failure = (arm_offer, "degraded", _DEGRADED, ())
            else:
                failure = _budget_failure(arm_offer, offer.unit_cost, _Headroom(budgets, state, now_utc))
        if failure is None:
            action = plan.actions[arm_offer]
    excluded = overridden if failure is None else (failure, *overridden)
    return action, budgets, outcome, excluded, experiment.arm_probability(arm_key, in_holdout, tier), None


# --- money -----------------------------------------------------------------------------------------


class _Headroom:
    """How much more each budget in scope can take now: the tightest cap and pacing room."""

    __slots__ = ("cap_budget", "cap_room", "cap_spent", "pace_allowed", "pace_budget", "pace_room", "pace_spent")

    def __init__(self, budgets: tuple[BudgetRule, ...], state: DecisionState, now_utc: datetime) -> None:
        self.cap_room = self.pace_room = _INFINITY
        self.cap_budget = self.pace_budget = None
        self.cap_spent = self.pace_spent = self.pace_allowed = 0.0
        spent_by_budget = state.spent_by_budget
        for budget in budgets:
            spent = spent_by_budget.get(budget.code, 0.0)
            if type(spent) not in _NUMBER or spent != spent:
                spent = _INFINITY  # spend we cannot read is spend we cannot risk
            room = budget.cap_amount - spent
            if room < self.cap_room:
                self.cap_room, self.cap_budget, self.cap_spent = room, budget, spent
            allowed = budget.paced_allowance(now_utc)
            room = allowed - spent
            if room < self.pace_room:
                self.pace_room, self.pace_budget, self.pace_spent, self.pace_allowed = room, budget, spent, allowed


def _budget_failure(offer_code: str, cost: float, headroom: _Headroom) -> ReasonFacts | None:
    if cost > headroom.cap_room + _MONEY_TOLERANCE:
        budget = headroom.cap_budget
        assert budget is not None  # a finite cap_room was set together with its budget
        return (
            offer_code,
            "budget_exhausted",
            _BUDGET_EXHAUSTED,
            (budget.code, max(0.0, headroom.cap_room), budget.cap_amount, cost),
        )
    if cost > headroom.pace_room + _MONEY_TOLERANCE:
        pace_budget = headroom.pace_budget
        assert pace_budget is not None  # likewise for pace_room
        return (
            offer_code,
            "pacing",
            _PACING,
            (pace_budget.code, headroom.pace_spent, headroom.pace_allowed, cost),
        )
    return None


def _amount(value: Any) -> float | None:
    """A money attribute, if it is a usable one (a finite, non-negative number)."""
    if type(value) in _NUMBER and 0 <= value < _INFINITY:
        amount: float = value  # a typed local, not cast(): no call on this path
        return amount
    return None


# --- arbitration -----------------------------------------------------------------------------------


def cost_within_subscriber_ltv_cap(cost: float, subscriber_value: float, max_cost_share_of_ltv: float) -> bool:
    """The per-subscriber LTV check of arbitration: whether an action costing ``cost`` stays
    within ``max_cost_share_of_ltv`` (the strictest of the budgets in scope) of this subscriber's
    value (the ``ltv`` attribute, else ARPU × the offer's value horizon). Failing it excludes the
    offer with reason ``ltv_cap``.

    Not to be confused with the per-arm check at promotion
    (``experiments.promotion_rules.arm_average_cost_within_ltv_cap``), which compares an arm's
    average cost per subscriber with the experiment policy's share of the value per retained
    subscriber; see ``offers.money_rules``.
    """
    return cost <= max_cost_share_of_ltv * subscriber_value + _MONEY_TOLERANCE


def _arbitration_choice(
    plan: ChannelPlan,
    state: DecisionState,
    now_utc: datetime,
    attributes: Mapping[str, Any],
    blocked: tuple[str, str, tuple[object, ...]] | None,
) -> _Choice:
    ltv = _amount(attributes.get("ltv"))
    arpu = _amount(attributes.get("arpu"))
    roi_floor, ltv_share = plan.money_rules.roi_floor, plan.money_rules.max_cost_share_of_ltv
    degraded = state.degraded
    headroom = _Headroom(plan.budgets, state, now_utc) if plan.budgets else None
    excluded: list[ReasonFacts] = []
    exclude = excluded.append
    candidates: list[tuple[float, float, str, Action]] = []
    action: Action | None  # each entry's action while scanning, then the chosen one (or None)

    for static, code, eligible, cost, gain_factor, horizon, action, not_eligible in plan.entries:
        if static is not None:
            exclude(static)
            continue
        if blocked is not None:
            exclude((code, *blocked))
            continue
        if not eligible(attributes):
            exclude(not_eligible)
            continue
        value = ltv if ltv is not None else (arpu * horizon if arpu is not None else None)
        if value is None:
            exclude((code, "no_value", _NO_VALUE, ()))
            continue
        if not cost_within_subscriber_ltv_cap(cost, value, ltv_share):
            exclude(
                (code, "ltv_cap", _LTV_CAP, (cost, ltv_share, value))
                if ltv is not None
                else (code, "ltv_cap", _VALUE_CAP, (cost, ltv_share, value, horizon))
            )
            continue
        gain = gain_factor * value
        if cost > 0:
            if gain < roi_floor * cost:
                exclude(
                    (code, "roi_below_floor", _ROI_BELOW_FLOOR, (math.floor(gain / cost * 100 + 1e-9) / 100, roi_floor))
                )
                continue
            if degraded:
                exclude((code, "degraded", _DEGRADED, ()))
                continue
            if headroom is not None:
                failure = _budget_failure(code, cost, headroom)
                if failure is not None:
                    exclude(failure)
                    continue
        score = gain - cost
        if score <= 0:
            exclude((code, "not_positive_score", _NOT_POSITIVE, (gain, cost)))
            continue
        candidates.append((score, cost, code, action))

    action = None
    best_score: float | None = None
    if candidates:
        best = candidates[0]
        for candidate in candidates:
            if candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] < best[1]):
                best = candidate
        best_score, _, best_code, action = best
        if len(candidates) > 1:
            beaten = sorted((c for c in candidates if c is not best), key=lambda c: -c[0])
            excluded[:0] = [(c[2], "lower_score", _LOWER_SCORE, (c[0], best_code, best_score)) for c in beaten]
    return action, plan.budgets, None, tuple(excluded), 1.0, best_score
