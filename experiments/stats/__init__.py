"""Pure statistics of experiment readouts: numpy, scipy, and (lazily) PyMC and ArviZ only.

* ``conjugate_readout`` — Beta-Binomial retention and Student-t ARPU per arm, over all tiers
  and per tier: uplift, P(beats control), P(best), expected loss, incremental value, ROI
  against a floor, complaint and ARPU guardrails, and the sample-ratio-mismatch check.
* ``fit_hierarchical`` / ``tier_winners`` — partial pooling across tiers × arms in PyMC,
  published only when the ArviZ diagnostics pass.

Inputs are frozen dataclasses of sufficient statistics; results are frozen dataclasses with
``as_json()``. Degenerate data gives an error code in the result, never an exception.
"""

from experiments.stats.conjugate import conjugate_readout
from experiments.stats.hierarchical import (
    Diagnostics,
    HierarchicalArm,
    HierarchicalPrior,
    HierarchicalResult,
    HierarchicalTier,
    fit_hierarchical,
    tier_winners,
)
from experiments.stats.inputs import ArmData, BetaPrior, ReadoutInputs, TierData
from experiments.stats.results import ArmResult, ConjugateReadout, Interval, TierResult
from experiments.stats.srm import SRM_P_THRESHOLD, SrmResult, sample_ratio_mismatch

__all__ = [
    "SRM_P_THRESHOLD",
    "ArmData",
    "ArmResult",
    "BetaPrior",
    "ConjugateReadout",
    "Diagnostics",
    "HierarchicalArm",
    "HierarchicalPrior",
    "HierarchicalResult",
    "HierarchicalTier",
    "Interval",
    "ReadoutInputs",
    "SrmResult",
    "TierData",
    "TierResult",
    "conjugate_readout",
    "fit_hierarchical",
    "sample_ratio_mismatch",
    "tier_winners",
]
