"""The catalogue the Redis-ledger decision tests share: a €5 paid offer that beats a free one for
every subscriber, one roomy monthly budget, and subscribers worth enough to be offered the paid one."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from offers.models import Budget, Offer, Subscriber

PAID, FREE, BUDGET = "BILL_CREDIT_5", "CARE_SMS", "fund"


def add_paid_and_free_catalogue(db: Session, subscriber_ids: list[str]) -> None:
    """Store the two offers, the budget (1000.00 a month) and the subscribers, and commit."""
    db.add_all(
        [
            Offer(
                code=PAID,
                name="€5 bill credit",
                unit_cost=Decimal("5.00"),
                channels=["sms"],
                eligibility={},
                prior_uplift=0.05,
            ),
            Offer(
                code=FREE, name="Care SMS", unit_cost=Decimal("0"), channels=["sms"], eligibility={}, prior_uplift=0.001
            ),
            Budget(code=BUDGET, name="Retention fund", period="month", cap_amount=Decimal("1000.00")),
            *[Subscriber(id=i, attributes={"ltv": 1000.0}, tier=None, tiers={}, ltv=1000.0) for i in subscriber_ids],
        ]
    )
    db.commit()
