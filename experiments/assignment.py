"""Experiment arm assignment, compatible with GrowthBook's SDKs (hash versions 1 and 2).

Pure: standard library only. A channel or app that already runs a GrowthBook SDK computes the
same arm for the same subscriber, because the hashing (FNV-1a 32), bucket ranges, variation
choice and namespaces below follow GrowthBook's reference JavaScript SDK and pass its
cross-SDK vectors (``../shared/conformance/growthbook-cases.json``).

Order of checks in :func:`assign` (GrowthBook's ``run`` for a single experiment, plus our
holdout): spec sanity (hash version, at least two arms, a subscriber id) → namespace →
holdout → coverage/weight ranges.

Stability guarantees that the lifecycle relies on:

* Raising coverage never moves a covered subscriber to another arm: arm *i* owns
  ``[start_i, start_i + coverage × weight_i)`` where ``start_i`` (the cumulative weight of the
  arms before it) does not depend on coverage, so a higher coverage only widens every range
  from its fixed start.
* The holdout uses its own hash (seed ``seed + ":holdout"``, version 2), independent of the
  arm hash and of coverage, so changing coverage never moves anyone into or out of the
  holdout.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass, field

FNV32_OFFSET_BASIS = 0x811C9DC5
FNV32_PRIME = 0x01000193
_UINT32_MASK = 0xFFFFFFFF
_UNMASKED_UNITS = 64  # longer strings mask every step: the unmasked integer grows 25 bits a unit
# GrowthBook accepts weights whose sum is within this band of 1 (rounding in UIs), else it
# falls back to equal weights
_WEIGHT_SUM_MIN, _WEIGHT_SUM_MAX = 0.99, 1.01
_UTF16_NATIVE = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
HOLDOUT_SEED_SUFFIX = ":holdout"
HOLDOUT_HASH_VERSION = 2


def _utf16_code_units(text: str) -> bytes | array[int]:
    """The string as JavaScript sees it (``charCodeAt``): bytes for Latin-1, else UTF-16 units."""
    try:
        return text.encode("latin-1")  # iterating bytes yields ints, the fast common case
    except UnicodeEncodeError:
        units = array("H")
        units.frombytes(text.encode(_UTF16_NATIVE))
        return units


def fnv1a32(text: str, start: int = FNV32_OFFSET_BASIS) -> int:
    """FNV-1a 32-bit hash of ``text``'s UTF-16 code units, as GrowthBook's JS SDK computes it.

    ``start`` continues a hash: ``fnv1a32(b, fnv1a32(a)) == fnv1a32(a + b)``, which lets a
    caller hash a fixed seed prefix once. SDKs disagree on characters beyond Latin-1 (the JS
    and Kotlin SDKs use UTF-16 units, others UTF-8 bytes); we follow the JS reference.
    """
    units = _utf16_code_units(text)
    hval = start
    if len(units) <= _UNMASKED_UNITS:
        # the low 32 bits of a product depend only on the low 32 bits of its factors (and the
        # XOR only on the low 16), so one mask at the end gives the same hash: a fifth faster
        for unit in units:
            hval = (hval ^ unit) * FNV32_PRIME
        return hval & _UINT32_MASK
    for unit in units:
        hval = ((hval ^ unit) * FNV32_PRIME) & _UINT32_MASK
    return hval


def _hash_v2_from_prefix_state(prefix_state: int, value: str) -> float:
    """Version-2 hash where ``prefix_state`` is ``fnv1a32(seed)`` (seed hashed once)."""
    return (fnv1a32(str(fnv1a32(value, prefix_state))) % 10000) / 10000


def hash_value(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's ``hash``: a number in [0, 1) for ``value`` under ``seed``; None if unknown.

    Version 1 (original, slightly biased): ``(fnv1a32(value + seed) % 1000) / 1000``.
    Version 2 (unbiased; the default): ``(fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000``.
    """
    if version == 2:
        return _hash_v2_from_prefix_state(fnv1a32(seed), value)
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def equal_weights(n: int) -> list[float]:
    """GrowthBook's ``getEqualWeights``: ``n`` weights of ``1/n`` (empty for ``n < 1``)."""
    if n < 1:
        return []
    return [1 / n] * n


def bucket_ranges(
    n: int, coverage: float = 1.0, weights: list[float] | tuple[float, ...] | None = None
) -> list[tuple[float, float]]:
    """GrowthBook's ``getBucketRanges``: the hash range ``[start, end)`` owned by each arm.

    Coverage is clamped to [0, 1]. Weights that are missing, of the wrong length, or that do
    not sum to 1 (± 0.01) are replaced by equal weights, as every GrowthBook SDK does. Ranges are
    not rounded (the JS reference does not round; some SDKs round to 4 decimals).
    """
    coverage = 0.0 if coverage < 0 else 1.0 if coverage > 1 else coverage
    if weights is None or len(weights) != n or not _WEIGHT_SUM_MIN <= sum(weights) <= _WEIGHT_SUM_MAX:
        weights = equal_weights(n)
    ranges: list[tuple[float, float]] = []
    cumulative = 0.0
    for weight in weights:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def choose_variation(n: float, ranges: list[tuple[float, float]] | tuple[tuple[float, float], ...]) -> int:
    """GrowthBook's ``chooseVariation``: index of the first range with ``start <= n < end``, else -1."""
    for index, (start, end) in enumerate(ranges):
        if start <= n < end:
            return index
    return -1


def in_namespace(user_id: str, namespace: tuple[str, float, float]) -> bool:
    """GrowthBook's ``inNamespace``: the id's version-1 hash under seed ``"__" + namespace_id``
    falls in ``[start, end)``. Experiments sharing a namespace id with disjoint ranges never
    share a subscriber."""
    namespace_id, start, end = namespace
    n = hash_value("__" + namespace_id, user_id, 1)
    return n is not None and start <= n < end


@dataclass(frozen=True)
class Assignment:
    """Where one subscriber lands in one experiment; ``reason`` says why (never raises)."""

    arm_index: int | None
    arm_key: str | None
    in_experiment: bool
    in_holdout: bool
    reason: str  # assigned | holdout | not_covered | not_in_namespace | bad_hash_version |
    #              too_few_arms | missing_subscriber_id


@dataclass(frozen=True)
class ExperimentSpec:
    """The assignment-relevant snapshot of one experiment phase.

    ``seed`` defaults to ``key`` (GrowthBook's rule: an empty seed means the key).
    ``weights`` None means equal weights. ``namespace`` is ``(namespace_id, start, end)``.
    ``holdout_share`` in [0, 1) is kept out of every arm, chosen by a hash independent of
    the arm hash and of coverage.
    """

    key: str
    arm_keys: tuple[str, ...]
    seed: str | None = None
    hash_version: int = 2
    coverage: float = 1.0
    weights: tuple[float, ...] | None = None
    namespace: tuple[str, float, float] | None = None
    holdout_share: float = 0.0
    # Derived once per snapshot: the hot path should not rebuild ranges or rehash the seed
    _ranges: tuple[tuple[float, float], ...] = field(init=False, repr=False, compare=False)
    _seed_state: int = field(init=False, repr=False, compare=False)
    _holdout_seed_state: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Tuples keep the frozen spec hashable even when a caller passes lists
        object.__setattr__(self, "arm_keys", tuple(self.arm_keys))
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(self.weights))
        if self.namespace is not None:
            object.__setattr__(self, "namespace", tuple(self.namespace))
        object.__setattr__(self, "_ranges", tuple(bucket_ranges(len(self.arm_keys), self.coverage, self.weights)))
        object.__setattr__(self, "_seed_state", fnv1a32(self.effective_seed))
        object.__setattr__(self, "_holdout_seed_state", fnv1a32(self.effective_seed + HOLDOUT_SEED_SUFFIX))

    @property
    def effective_seed(self) -> str:
        """The seed actually hashed: ``seed``, or ``key`` when no seed is set."""
        return self.seed or self.key

    @property
    def ranges(self) -> tuple[tuple[float, float], ...]:
        """Each arm's ``[start, end)`` hash range under this coverage and these weights."""
        return self._ranges


def _not_in(reason: str, *, in_holdout: bool = False) -> Assignment:
    return Assignment(None, None, False, in_holdout, reason)


def in_holdout(spec: ExperimentSpec, subscriber_id: str) -> bool:
    """Whether the subscriber's holdout hash (version 2, seed ``seed + ":holdout"``) is below
    ``holdout_share``; ignores namespace and coverage."""
    if spec.holdout_share <= 0:
        return False
    return _hash_v2_from_prefix_state(spec._holdout_seed_state, subscriber_id) < spec.holdout_share


def assign(spec: ExperimentSpec, subscriber_id: str) -> Assignment:
    """The arm GrowthBook would give ``subscriber_id`` in ``spec``, after our holdout.

    Deterministic: depends only on the spec and the id. Not-assigned outcomes are returned
    with a ``reason``, never raised, so a misconfigured experiment cannot fail a decision.
    """
    if spec.hash_version not in (1, 2):
        return _not_in("bad_hash_version")
    if len(spec.arm_keys) < 2:  # GrowthBook skips experiments with fewer than two variations
        return _not_in("too_few_arms")
    if not subscriber_id:
        return _not_in("missing_subscriber_id")
    if spec.namespace is not None and not in_namespace(subscriber_id, spec.namespace):
        return _not_in("not_in_namespace")
    if in_holdout(spec, subscriber_id):
        return _not_in("holdout", in_holdout=True)
    if spec.hash_version == 2:
        n = _hash_v2_from_prefix_state(spec._seed_state, subscriber_id)
    else:
        n = (fnv1a32(subscriber_id + spec.effective_seed) % 1000) / 1000
    index = choose_variation(n, spec._ranges)
    if index < 0:
        return _not_in("not_covered")
    return Assignment(index, spec.arm_keys[index], True, False, "assigned")
