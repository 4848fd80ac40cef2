"""The decision engine's configuration snapshot: frozen, built once per configuration version.

Pure: standard library plus the project's pure modules (conditions, tiering, assignment). The
service reads offers, tiers, tier policies, contact policies, budgets, running experiments and
promoted uplift estimates from the database as plain dicts and calls :func:`build_snapshot`;
every condition is compiled here, once, and everything the hot path would otherwise recompute
per decision is precomputed: one :class:`ChannelPlan` per (tier, channel) holding each offer's
static verdict (channel, tier policy, authority limit), its expected-gain factor and its
deliverable :class:`Action`, plus the budgets in scope and their strictest money rules.

Choices the rest of the engine relies on:

* **No tier-policy row** for a (tier, offer) means *allowed* with the model's defaults (no
  authority limit, granted automatically, context weight 1, lever 1). The demo seed writes an
  explicit row for every pair of its value tiers, refusals included, so it does not rely on
  this; the default matters for offers created after the tiers (they are offered until a
  marketer restricts them) and for subscribers no tier matches (tier ``None``).
* **Uplift** for (tier, offer): the promoted estimate for that tier, else the promoted estimate
  for every tier (key ``(None, offer)``), else the offer's ``prior_uplift``.
* **Budgets in scope** of an arbitrated offer: every programme budget, the tier budgets of the
  subscriber's tier and the channel budgets of the contact's channel; experiment budgets only
  when that experiment decides. Their money rules combine into the strictest: the highest ROI
  floor and the lowest LTV share (``offers.money_rules``' defaults when none is in scope).
* **Budget periods** are calendar months, quarters or years in UTC unless the caller gives
  explicit bounds; ``DecisionSnapshot.valid_until`` is the earliest period end, after which the
  service must rebuild the snapshot (pacing would otherwise measure the wrong period).
* Inactive rows (``"active": False``) are left out, and experiments not in pilot or rollout.

The dataclasses are frozen; the mappings they hold are plain dicts for lookup speed and must be
treated as read-only. Building raises :class:`SnapshotError` on configuration that cannot be
used; deciding never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from decisioning.risk import DEFAULT_RISK_POLICY, RiskPolicy
from experiments.assignment import ExperimentSpec
from offers.conditions import compile_condition
from offers.instants import as_utc
from offers.money_rules import DEFAULT_MONEY_RULES, MoneyRules, strictest_money_rules
from offers.tiering import TierAssigner, TierRule
from offers.time_zones import time_zone

__all__ = [
    "Action",
    "BudgetRule",
    "ChannelPlan",
    "ContactRule",
    "DecisionSnapshot",
    "LiveExperiment",
    "OfferRule",
    "SnapshotError",
    "TierPolicyRule",
    "budget_period_bounds",
    "build_snapshot",
    "channel_list",
    "experiment_spec_from_row",
]

Predicate = Callable[[Mapping[str, Any]], bool]
# A reason is (offer_code, code, message template, template arguments): the message is only
# formatted when someone reads it, so the hot path builds (or reuses) a tuple and nothing else.
ReasonFacts = tuple[str, str, str, tuple[object, ...]]

RUNNING_STATUSES = ("pilot", "rollout")  # as experiments.models, which imports sqlalchemy
BUDGET_SCOPES = ("programme", "experiment", "tier", "channel")
BUDGET_PERIODS = ("month", "quarter", "year")
DEFAULT_PACING_SLACK = 0.1


class SnapshotError(ValueError):
    """Configuration the engine cannot use; the message names the row."""


def _money(value: float) -> str:
    return f"{value:.2f}"


def channel_list(channels: Iterable[str]) -> str:
    """Channels as an agent reads them: "app", "app or sms", "app, retail or sms"."""
    names = sorted(channels)
    if not names:
        return "no channel"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# --- configuration rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferRule:
    """A care action as the engine sees it. ``eligibility`` is the compiled condition."""

    code: str
    name: str
    unit_cost: float
    channels: frozenset[str]
    eligibility: Predicate
    prior_uplift: float = 0.0  # expected absolute uplift of the retention probability
    value_horizon_months: float = 12.0  # how many months of ARPU value it when LTV is unknown


@dataclass(frozen=True)
class TierPolicyRule:
    """What a tier may receive and who may grant it (table ``tier_policies``)."""

    tier_code: str | None
    offer_code: str
    allowed: bool = True
    max_cost: float | None = None  # authority limit; None = no limit
    granted_by: str = "automatic"
    context_weight: float = 1.0
    lever: float = 1.0
    note: str = ""


def _minute_of_day(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        hours, minutes = text.split(":")
        value = int(hours) * 60 + int(minutes)
        if len(hours) == 2 and len(minutes) == 2 and 0 <= int(hours) < 24 and 0 <= int(minutes) < 60:
            return value
    except (AttributeError, ValueError):
        pass
    raise SnapshotError(f"{what} must be HH:MM, got {text!r}")


@dataclass(frozen=True)
class ContactRule:
    """Contact cap and quiet hours of one channel. Quiet hours run from ``quiet_start`` up to
    (not including) ``quiet_end``, across midnight when ``quiet_end`` is earlier; equal times
    mean no quiet hours. ``timezone`` is used for subscribers without a valid ``timezone``."""

    channel: str
    max_contacts: int
    window_days: int
    quiet_start: str | None = None
    quiet_end: str | None = None
    timezone: str = "UTC"
    quiet_minutes: tuple[int, int] | None = field(init=False, repr=False, compare=False)
    zone: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        start = _minute_of_day(self.quiet_start, f"contact policy {self.channel}: quiet_start")
        end = _minute_of_day(self.quiet_end, f"contact policy {self.channel}: quiet_end")
        if (start is None) != (end is None):
            raise SnapshotError(f"contact policy {self.channel}: give both quiet_start and quiet_end, or neither")
        zone = time_zone(self.timezone)
        if zone is None:
            raise SnapshotError(f"contact policy {self.channel}: unknown time zone {self.timezone!r}")
        object.__setattr__(self, "quiet_minutes", None if start is None or start == end else (start, end))
        object.__setattr__(self, "zone", zone)

    def is_quiet(self, minute_of_day: int) -> bool:
        """Whether a local time (minutes after midnight) falls in the quiet hours."""
        if self.quiet_minutes is None:
            return False
        start, end = self.quiet_minutes
        if start < end:
            return start <= minute_of_day < end
        return minute_of_day >= start or minute_of_day < end


@dataclass(frozen=True)
class BudgetRule:
    """A money cap for the current period over a scope, with the money rules that gate spending.

    ``cap_amount`` is the effective cap for the period (a share-of-revenue cap already turned
    into money). Pacing: by the moment ``now`` at most ``cap × elapsed share of the period ×
    (1 + pacing_slack)`` may be spent; without period bounds only the cap applies.
    ``money_rules`` apply per subscriber to every arbitrated offer spending from this budget.
    """

    code: str
    scope_type: str
    scope_value: str | None
    cap_amount: float
    money_rules: MoneyRules = DEFAULT_MONEY_RULES
    period_start: datetime | None = None
    period_end: datetime | None = None
    pacing_slack: float = DEFAULT_PACING_SLACK

    def __post_init__(self) -> None:
        if self.scope_type not in BUDGET_SCOPES:
            raise SnapshotError(f"budget {self.code}: scope_type must be one of {', '.join(BUDGET_SCOPES)}")
        if (self.period_start is None) != (self.period_end is None):
            raise SnapshotError(f"budget {self.code}: give both period_start and period_end, or neither")
        if self.period_start is not None and self.period_end is not None:  # both or neither, as checked
            start, end = as_utc(self.period_start), as_utc(self.period_end)
            object.__setattr__(self, "period_start", start)
            object.__setattr__(self, "period_end", end)
            if end <= start:
                raise SnapshotError(f"budget {self.code}: period_end must be after period_start")
        rules = self.money_rules
        if not self.cap_amount >= 0 or not rules.roi_floor >= 0 or not 0 < rules.max_cost_share_of_ltv <= 1:
            raise SnapshotError(
                f"budget {self.code}: cap_amount and roi_floor must be >= 0 and max_cost_share_of_ltv in (0, 1]"
            )
        if not self.pacing_slack >= 0:
            raise SnapshotError(f"budget {self.code}: pacing_slack must be >= 0")

    def covers(self, tier: str | None, channel: str) -> bool:
        """Whether an arbitrated offer for this tier and channel spends from this budget."""
        kind = self.scope_type
        return (
            kind == "programme"
            or (kind == "tier" and self.scope_value == tier)
            or (kind == "channel" and self.scope_value == channel)
        )

    def paced_allowance(self, now: datetime) -> float:
        """How much of the cap may have been spent by ``now`` (aware, UTC)."""
        start, end = self.period_start, self.period_end
        if start is None or end is None:  # both or neither (__post_init__)
            return self.cap_amount
        elapsed = (now - start) / (end - start)
        elapsed = 0.0 if elapsed < 0 else 1.0 if elapsed > 1 else elapsed
        return min(self.cap_amount, self.cap_amount * elapsed * (1 + self.pacing_slack))


@dataclass(frozen=True)
class Action:
    """The action to take: an offer as one tier receives it (``granted_by`` tells an agent who
    may grant it). Built once per (tier, offer) in the snapshot."""

    offer_code: str
    name: str
    cost: float
    granted_by: str = "automatic"

    def as_json(self) -> dict[str, Any]:
        return {"offer_code": self.offer_code, "name": self.name, "cost": self.cost, "granted_by": self.granted_by}


@dataclass(frozen=True)
class LiveExperiment:
    """A running experiment: its assignment spec, compiled target and what each arm gives.

    ``arm_offers`` maps every arm key to its offer code (None = no action, the control).
    In rollout, subscribers newly assigned to any arm get ``tier_winners[tier]`` or else
    ``winner_arm_key`` (as ``experiments.exposures.expose`` records them).
    """

    key: str
    spec: ExperimentSpec
    target: Predicate
    arm_offers: Mapping[str, str | None]
    status: str = "pilot"
    winner_arm_key: str | None = None
    tier_winners: Mapping[str, str] = field(default_factory=dict)
    budget_code: str | None = None
    spending_paused: bool = False
    _namespace_share: float = field(init=False, repr=False, compare=False)
    _arm_share: Mapping[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = self.spec
        namespace_share = 1.0
        if spec.namespace is not None:
            namespace_share = max(0.0, min(1.0, spec.namespace[2]) - max(0.0, spec.namespace[1]))
        object.__setattr__(self, "_namespace_share", namespace_share)
        object.__setattr__(
            self, "_arm_share", {arm: end - start for arm, (start, end) in zip(spec.arm_keys, spec.ranges)}
        )

    @property
    def rolled_out(self) -> bool:
        return self.status == "rollout" and self.winner_arm_key is not None

    def rollout_arm(self, tier: str | None) -> str | None:
        """The arm a subscriber newly assigned in rollout gets: the tier's winner, else the winner."""
        return self.tier_winners.get(tier or "") or self.winner_arm_key

    def arm_probability(self, arm_key: str | None, in_holdout: bool, tier: str | None) -> float:
        """The probability that the assignment gives a subscriber this outcome, over the hash:
        namespace share × holdout share for the holdout; namespace share × (1 − holdout) ×
        the arm's hash range for an arm; in rollout the winner gets every covered range.

        Used as the logging propensity for off-policy evaluation. A recorded (sticky) arm gets
        the same figure as a fresh one: the randomisation happened at first exposure, and the
        current split is the best record of it the snapshot has.
        """
        holdout = self.spec.holdout_share
        if in_holdout:
            return self._namespace_share * holdout
        treated = self._namespace_share * (1.0 - holdout)
        if self.rolled_out and arm_key == self.rollout_arm(tier):
            return treated * sum(self._arm_share.values())
        return treated * self._arm_share.get(arm_key or "", 0.0)


# --- the plan of one (tier, channel) -----------------------------------------------------------


@dataclass(frozen=True)
class ChannelPlan:
    """Everything about arbitration that depends only on the tier and the channel.

    ``entries`` holds one tuple per active offer, in catalogue order:
    ``(static_reason, offer_code, eligibility, cost, gain_factor, value_horizon_months, action,
    not_eligible_reason)`` where ``static_reason`` is the prebuilt reason when the offer is out
    before looking at the subscriber (channel, tier policy, authority limit), else None;
    ``gain_factor`` is uplift × context weight × lever, so expected gain = gain_factor × value;
    ``not_eligible_reason`` is prebuilt because it is the most common exclusion.
    """

    tier: str | None
    channel: str
    entries: tuple[tuple[ReasonFacts | None, str, Predicate, float, float, float, Action, ReasonFacts], ...]
    budgets: tuple[BudgetRule, ...]
    money_rules: MoneyRules  # the strictest of the budgets' rules
    actions: Mapping[str, Action]  # offer code -> the offer as this tier receives it


# --- the snapshot ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionSnapshot:
    """One configuration version, ready for :func:`decisioning.core.decide`.

    ``version`` is the config generation it was loaded at (``infra.config_version``).
    ``experiments`` holds the running experiments only, ordered by key: when several would
    decide for one subscriber, the first wins. ``tier_names`` maps tier codes to display names
    (for agent messages). ``tier_policies`` is keyed by (tier code, offer code).
    """

    version: int
    offers: tuple[OfferRule, ...]
    tier_assigner: TierAssigner
    tier_policies: Mapping[tuple[str | None, str], TierPolicyRule] = field(default_factory=dict)
    contact_rules: Mapping[str, ContactRule] = field(default_factory=dict)
    budgets: tuple[BudgetRule, ...] = ()
    experiments: tuple[LiveExperiment, ...] = ()
    uplift_estimates: Mapping[tuple[str | None, str], float] = field(default_factory=dict)
    risk_policy: RiskPolicy = DEFAULT_RISK_POLICY
    tier_names: Mapping[str, str] = field(default_factory=dict)
    valid_until: datetime | None = None
    offers_by_code: Mapping[str, OfferRule] = field(init=False, repr=False, compare=False)
    budgets_by_code: Mapping[str, BudgetRule] = field(init=False, repr=False, compare=False)
    experiment_override_reasons: Mapping[tuple[str, str | None], tuple[ReasonFacts, ...]] = field(
        init=False, repr=False, compare=False
    )
    _plans: Mapping[tuple[str | None, str], ChannelPlan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offers_by_code = {offer.code: offer for offer in self.offers}
        if len(offers_by_code) != len(self.offers):
            raise SnapshotError("offer codes must be unique")
        object.__setattr__(self, "offers_by_code", offers_by_code)
        object.__setattr__(self, "budgets_by_code", {b.code: b for b in self.budgets})
        object.__setattr__(
            self,
            "experiments",
            tuple(sorted((e for e in self.experiments if e.status in RUNNING_STATUSES), key=lambda e: e.key)),
        )
        object.__setattr__(self, "experiment_override_reasons", self._override_reasons())
        tiers = {None, *self.tier_names, *(tier for tier, _ in self.tier_policies)}
        channels = {c for offer in self.offers for c in offer.channels} | set(self.contact_rules)
        object.__setattr__(
            self, "_plans", {(tier, channel): self._build_plan(tier, channel) for tier in tiers for channel in channels}
        )

    def plan_for(self, tier: str | None, channel: str) -> ChannelPlan:
        """The precomputed plan of (tier, channel); built on the spot for a pair the
        configuration never names (a channel no offer uses)."""
        plan = self._plans.get((tier, channel))
        return plan if plan is not None else self._build_plan(tier, channel)

    def policy(self, tier: str | None, offer_code: str) -> TierPolicyRule:
        """The tier policy of (tier, offer), or the defaults when no row exists."""
        rule = self.tier_policies.get((tier, offer_code))
        return rule if rule is not None else TierPolicyRule(tier, offer_code)

    def uplift(self, tier: str | None, offer: OfferRule) -> float:
        """Promoted estimate for the tier, else for every tier, else the offer's prior."""
        estimates = self.uplift_estimates
        value = estimates.get((tier, offer.code))
        if value is None:
            value = estimates.get((None, offer.code))
        return offer.prior_uplift if value is None else value

    def _tier_label(self, tier: str | None) -> str:
        return self.tier_names.get(tier, tier) if tier is not None else "untiered"

    def _build_plan(self, tier: str | None, channel: str) -> ChannelPlan:
        entries = []
        for offer in self.offers:
            policy = self.policy(tier, offer.code)
            static: ReasonFacts | None = None
            if channel not in offer.channels:
                static = (
                    offer.code,
                    "channel_not_supported",
                    "delivered by {0}, not by {1}",
                    (channel_list(offer.channels), channel),
                )
            elif not policy.allowed:
                static = (offer.code, "tier_not_allowed", "{0}", (self._refusal(tier, offer.code, policy),))
            elif policy.max_cost is not None and offer.unit_cost > policy.max_cost:
                static = (
                    offer.code,
                    "over_authority",
                    "costs {0}, above the {1} tier's authority limit of {2} ({3})",
                    (_money(offer.unit_cost), self._tier_label(tier), _money(policy.max_cost), policy.granted_by),
                )
            gain_factor = self.uplift(tier, offer) * policy.context_weight * policy.lever
            action = Action(offer.code, offer.name, offer.unit_cost, policy.granted_by)
            entries.append(
                (
                    static,
                    offer.code,
                    offer.eligibility,
                    offer.unit_cost,
                    gain_factor,
                    offer.value_horizon_months,
                    action,
                    (offer.code, "not_eligible", "does not meet the offer's eligibility rule", ()),
                )
            )
        budgets = tuple(sorted((b for b in self.budgets if b.covers(tier, channel)), key=lambda b: b.code))
        money_rules = strictest_money_rules(budget.money_rules for budget in budgets)
        return ChannelPlan(
            tier, channel, tuple(entries), budgets, money_rules, {entry[1]: entry[6] for entry in entries}
        )

    def _refusal(self, tier: str | None, offer_code: str, policy: TierPolicyRule) -> str:
        if policy.note:
            return policy.note
        allowed = sorted(
            self._tier_label(t)
            for (t, code), rule in self.tier_policies.items()
            if code == offer_code and rule.allowed and t is not None
        )
        only = f" (only {', '.join(allowed)})" if allowed else ""
        return f"not offered to the {self._tier_label(tier)} tier{only}"

    def _override_reasons(self) -> dict[tuple[str, str | None], tuple[ReasonFacts, ...]]:
        """Per (experiment, arm) — arm None for the holdout — the reasons of every offer the
        experiment's decision overrides: all of them but the arm's own offer."""
        table: dict[tuple[str, str | None], tuple[ReasonFacts, ...]] = {}
        for experiment in self.experiments:
            for arm in (*experiment.spec.arm_keys, None):
                args: tuple[str, ...]
                arm_offer = experiment.arm_offers.get(arm) if arm is not None else None
                if arm is None:
                    template, args = "subscriber is in experiment {0}'s holdout: no action", (experiment.key,)
                else:
                    template, args = "experiment {0} decides for this subscriber (arm {1})", (experiment.key, arm)
                table[(experiment.key, arm)] = tuple(
                    (offer.code, "experiment_override", template, args)
                    for offer in self.offers
                    if offer.code != arm_offer
                )
        return table


# --- building from plain rows ------------------------------------------------------------------


def budget_period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month, quarter or year that contains ``now``: [start, end)."""
    now = as_utc(now)
    if period == "month":
        first_month, months = now.month, 1
    elif period == "quarter":
        first_month, months = 3 * ((now.month - 1) // 3) + 1, 3
    elif period == "year":
        first_month, months = 1, 12
    else:
        raise SnapshotError(f"budget period must be one of {', '.join(BUDGET_PERIODS)}, got {period!r}")
    start = datetime(now.year, first_month, 1, tzinfo=UTC)
    end_year, end_month = divmod(first_month - 1 + months, 12)
    return start, datetime(now.year + end_year, end_month + 1, 1, tzinfo=UTC)


def _active(rows: Iterable[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    return [row for row in rows or () if row.get("active", True)]


def _float(row: Mapping[str, Any], name: str, what: str, default: Any = ...) -> float:
    value = row.get(name, default)
    if value is ...:
        raise SnapshotError(f"{what}: {name} is missing")
    try:
        number = float(value)  # Decimal from a Numeric column, int, float
    except (TypeError, ValueError):
        raise SnapshotError(f"{what}: {name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SnapshotError(f"{what}: {name} must be finite")
    return number


def _offer(row: Mapping[str, Any]) -> OfferRule:
    code = row.get("code")
    if type(code) is not str or not code:
        raise SnapshotError(f"offer without a code: {row!r}")
    what = f"offer {code}"
    horizon = _float(row, "value_horizon_months", what, 12)
    if horizon <= 0:
        raise SnapshotError(f"{what}: value_horizon_months must be positive")
    cost = _float(row, "unit_cost", what)
    if cost < 0:
        raise SnapshotError(f"{what}: unit_cost must be >= 0")
    return OfferRule(
        code=code,
        name=str(row.get("name") or code),
        unit_cost=cost,
        channels=frozenset(row.get("channels") or ()),
        eligibility=compile_condition(dict(row.get("eligibility") or {})),
        prior_uplift=_float(row, "prior_uplift", what, 0.0),
        value_horizon_months=horizon,
    )


def _tier_policy(row: Mapping[str, Any]) -> TierPolicyRule:
    what = f"tier policy {row.get('tier_code')}/{row.get('offer_code')}"
    max_cost = row.get("max_cost")
    return TierPolicyRule(
        tier_code=row.get("tier_code"),
        offer_code=str(row.get("offer_code")),
        allowed=bool(row.get("allowed", True)),
        max_cost=None if max_cost is None else _float(row, "max_cost", what),
        granted_by=str(row.get("granted_by") or "automatic"),
        context_weight=_float(row, "context_weight", what, 1.0),
        lever=_float(row, "lever", what, 1.0),
        note=str(row.get("note") or ""),
    )


def _contact_rule(row: Mapping[str, Any]) -> ContactRule:
    what = f"contact policy {row.get('channel')}"
    try:
        return ContactRule(
            channel=str(row["channel"]),
            max_contacts=int(row["max_contacts"]),
            window_days=int(row["window_days"]),
            quiet_start=row.get("quiet_start"),
            quiet_end=row.get("quiet_end"),
            timezone=str(row.get("timezone") or "UTC"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"{what}: {exc!r}") from None


def _budget(row: Mapping[str, Any], now: datetime | None, period_revenue: float | None) -> BudgetRule:
    code = str(row.get("code"))
    what = f"budget {code}"
    if row.get("cap_amount") is not None:
        cap = _float(row, "cap_amount", what)
    elif row.get("cap_share_of_revenue") is not None:
        if period_revenue is None:
            raise SnapshotError(f"{what}: a share-of-revenue cap needs the period's revenue")
        cap = _float(row, "cap_share_of_revenue", what) * period_revenue
    else:
        raise SnapshotError(f"{what}: give cap_amount or cap_share_of_revenue")
    start, end = row.get("period_start"), row.get("period_end")
    if start is None and end is None and now is not None:
        start, end = budget_period_bounds(str(row.get("period") or "month"), now)
    return BudgetRule(
        code=code,
        scope_type=str(row.get("scope_type") or "programme"),
        scope_value=row.get("scope_value"),
        cap_amount=cap,
        money_rules=MoneyRules(
            roi_floor=_float(row, "roi_floor", what, DEFAULT_MONEY_RULES.roi_floor),
            max_cost_share_of_ltv=_float(row, "max_cost_share_of_ltv", what, DEFAULT_MONEY_RULES.max_cost_share_of_ltv),
        ),
        period_start=start,
        period_end=end,
        pacing_slack=_float(row, "pacing_slack", what, DEFAULT_PACING_SLACK),
    )


def experiment_spec_from_row(row: Mapping[str, Any]) -> ExperimentSpec:
    """The assignment spec of an experiment row with its arms, exactly as
    ``experiments.service.experiment_spec`` builds it from the ORM object (arms in position
    order, relative weights normalised to sum to 1)."""
    arms = sorted(row.get("arms") or (), key=lambda arm: arm["position"])
    total = sum(float(arm["weight"]) for arm in arms)
    weights = tuple(float(arm["weight"]) / total for arm in arms) if total > 0 else None
    namespace = (
        (row["namespace"], float(row.get("namespace_start", 0.0)), float(row.get("namespace_end", 1.0)))
        if row.get("namespace")
        else None
    )
    return ExperimentSpec(
        key=row["key"],
        arm_keys=tuple(arm["key"] for arm in arms),
        seed=row.get("hash_seed"),
        hash_version=int(row.get("hash_version", 2)),
        coverage=float(row.get("coverage", 1.0)),
        weights=weights,
        namespace=namespace,
        holdout_share=float(row.get("holdout_share", 0.0)),
    )


def _experiment(row: Mapping[str, Any]) -> LiveExperiment:
    try:
        spec = experiment_spec_from_row(row)
        arm_offers = {arm["key"]: arm.get("offer_code") for arm in row.get("arms") or ()}
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"experiment {row.get('key')}: {exc!r}") from None
    return LiveExperiment(
        key=spec.key,
        spec=spec,
        target=compile_condition(dict(row.get("target") or {})),
        arm_offers=arm_offers,
        status=str(row.get("status")),
        winner_arm_key=row.get("winner_arm_key"),
        tier_winners=dict(row.get("tier_winners") or {}),
        budget_code=row.get("budget_code"),
        spending_paused=bool(row.get("spending_paused", False)),
    )


def build_snapshot(
    *,
    version: int,
    offers: Iterable[Mapping[str, Any]],
    tiers: Iterable[Mapping[str, Any]] = (),
    primary_scheme: str | None = None,
    tier_policies: Iterable[Mapping[str, Any]] = (),
    contact_policies: Iterable[Mapping[str, Any]] = (),
    budgets: Iterable[Mapping[str, Any]] = (),
    experiments: Iterable[Mapping[str, Any]] = (),
    uplift_estimates: Mapping[tuple[str | None, str], float] | None = None,
    risk_policy: RiskPolicy = DEFAULT_RISK_POLICY,
    now: datetime | None = None,
    period_revenue: float | None = None,
) -> DecisionSnapshot:
    """Build a snapshot from rows shaped like the tables (and like ``offers.demo_seed``'s data).

    - ``offers``: code, name, unit_cost, channels, eligibility, prior_uplift, value_horizon_months.
    - ``tiers``: code, scheme_code, rank, rule, name; only ``primary_scheme``'s tiers are used
      (the primary tier drives tier policies). No primary scheme: every subscriber is untiered.
    - ``tier_policies``: tier_code, offer_code, allowed, max_cost, granted_by, context_weight,
      lever, note.
    - ``contact_policies``: channel, max_contacts, window_days, quiet_start, quiet_end, timezone.
    - ``budgets``: code, scope_type, scope_value, cap_amount or cap_share_of_revenue (turned
      into money with ``period_revenue``), roi_floor, max_cost_share_of_ltv, and either
      period_start/period_end or ``period`` (month/quarter/year, bounds taken around ``now``;
      without ``now`` or bounds, no pacing), optional pacing_slack.
    - ``experiments``: key, status, target, arms [{key, offer_code, weight, position}],
      coverage, holdout_share, hash_seed, hash_version, namespace, namespace_start,
      namespace_end, winner_arm_key, tier_winners, budget_code, spending_paused.
    - ``uplift_estimates``: {(tier code or None for every tier, offer code): uplift}.

    Rows with ``"active": False`` are skipped. Raises SnapshotError on unusable configuration.
    """
    offer_rules = tuple(_offer(row) for row in _active(offers))
    tier_rows = [row for row in _active(tiers) if row.get("scheme_code") == primary_scheme]
    try:
        tier_rules = [
            TierRule(str(row["scheme_code"]), str(row["code"]), int(row["rank"]), dict(row.get("rule") or {}))
            for row in tier_rows
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"tier: {exc!r}") from None
    budget_rules = tuple(_budget(row, now, period_revenue) for row in _active(budgets))
    ends = [b.period_end for b in budget_rules if b.period_end is not None]
    policies = {}
    for row in _active(tier_policies):
        rule = _tier_policy(row)
        policies[(rule.tier_code, rule.offer_code)] = rule
    return DecisionSnapshot(
        version=version,
        offers=offer_rules,
        tier_assigner=TierAssigner(tier_rules, primary_scheme),
        tier_policies=policies,
        contact_rules={rule.channel: rule for rule in map(_contact_rule, _active(contact_policies))},
        budgets=budget_rules,
        experiments=tuple(_experiment(row) for row in experiments if row.get("status") in RUNNING_STATUSES),
        uplift_estimates=dict(uplift_estimates or {}),
        risk_policy=risk_policy,
        tier_names={str(row["code"]): str(row.get("name") or row["code"]) for row in tier_rows},
        valid_until=min(ends) if ends else None,
    )
