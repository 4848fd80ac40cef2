"""Posterior of a mean revenue per subscriber from (n, sum, sum of squares).

The model: revenues are normal with unknown mean and variance, under the reference prior
p(mean, sd) ∝ 1/sd. The posterior of the mean is then Student-t with n − 1 degrees of
freedom, centred on the sample mean, scaled by the standard error s/√n — for large n the
usual normal approximation, and honest about the extra uncertainty when n is small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special


@dataclass(frozen=True)
class MeanPosterior:
    """Student-t(df) posterior of a mean: location ``mean``, scale ``scale``."""

    mean: float
    scale: float
    df: int

    def ci95(self) -> tuple[float, float]:
        """The equal-tailed 95% credible interval."""
        half_width = float(special.stdtrit(self.df, 0.975)) * self.scale
        return self.mean - half_width, self.mean + half_width


def revenue_mean_posterior(n: int, total: float, total_squares: float) -> MeanPosterior | None:
    """The posterior of the mean revenue of the ``n`` subscribers with a figure; None if n < 2
    (one figure says nothing about the spread)."""
    if n < 2:
        return None
    mean = total / n
    # rounding can leave the sum of squared deviations a hair below zero when all are equal
    variance = max((total_squares - total * mean) / (n - 1), 0.0)
    return MeanPosterior(mean=mean, scale=math.sqrt(variance / n), df=n - 1)
