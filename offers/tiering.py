"""Tier assignment: the first active tier (by rank) whose rule matches, in every scheme.

Pure: takes plain rule tuples, compiles each rule once, and evaluates profiles quickly enough
to tier a whole base during an import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from offers.conditions import compile_condition


@dataclass(frozen=True)
class TierRule:
    scheme_code: str
    tier_code: str
    rank: int
    condition: Mapping[str, Any]


class TierResult(NamedTuple):
    """A NamedTuple, not a dataclass: imports build one per row and this is 3× cheaper."""

    tier: str | None  # the primary scheme's tier
    by_scheme: dict[str, str | None]


class TierAssigner:
    """Assigns profiles to tiers; build once per import or config snapshot."""

    def __init__(self, rules: Iterable[TierRule], primary_scheme: str | None) -> None:
        by_scheme: dict[str, list[TierRule]] = {}
        for rule in rules:
            by_scheme.setdefault(rule.scheme_code, []).append(rule)
        self.primary_scheme = primary_scheme
        self._schemes: list[tuple[str, list[tuple[str, Callable[[Mapping[str, Any]], bool]]]]] = [
            (
                scheme,
                [
                    (r.tier_code, compile_condition(dict(r.condition)))
                    for r in sorted(scheme_rules, key=lambda r: r.rank)
                ],
            )
            for scheme, scheme_rules in sorted(by_scheme.items())
        ]

    def assign(self, attributes: Mapping[str, Any]) -> TierResult:
        """The first matching tier of every scheme (None where nothing matches)."""
        by_scheme: dict[str, str | None] = {}
        for scheme, compiled in self._schemes:
            by_scheme[scheme] = None
            for code, matches in compiled:  # a plain loop: this runs per imported row
                if matches(attributes):
                    by_scheme[scheme] = code
                    break
        return TierResult(by_scheme.get(self.primary_scheme) if self.primary_scheme else None, by_scheme)
