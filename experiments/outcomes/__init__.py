"""Outcomes: what happened after an exposure — recorded singly or streamed in bulk.

An outcome names its exposure by experiment key + subscriber id (how billing reports), or by
decision id (how channels report: the decision ledger's lookup resolves it, see
``resolving.DecisionExposures``).

Rules, the same for single and bulk outcomes:

* ``type`` is one of ``OUTCOME_TYPES``. ``value`` is required for ``revenue`` (any finite
  number; refunds may be negative) and optional otherwise.
* ``occurred_at`` is ISO-8601 with a time zone (``Z`` or ``+08:00``), stored in UTC. It may not
  be more than ``CLOCK_SKEW`` before the subscriber's first exposure (such an event cannot be
  caused by the experiment) or after the time of ingest.
* ``day_n`` belongs to ``retained`` (a status check on that day after the first exposure) and
  ``churned`` (the day the subscriber left). When it is not given it is the whole days
  between the first exposure and ``occurred_at``. Send it explicitly for scheduled checks
  ("retained at day 30"), whose run time may drift.
* Idempotent: one row per (exposure, ``retained``, day) and per (exposure, other type);
  re-sending updates the row, and the report with the latest ``occurred_at`` wins (ties: the
  last received), so replaying an old file cannot undo a correction. Within one bulk body
  the same rule picks among duplicates.
* An outcome for a subscriber never exposed to the experiment is refused.

The modules: ``schemas`` (what a report holds), ``parsing`` (bulk rows), ``resolving`` (the
exposure an outcome belongs to, and its rules), ``writing`` (the upserts), ``service`` (the
use cases).

Bulk bodies are CSV (header row naming the fields) or JSON lines with the same fields, read
as a stream through the import pipeline (``infra.bulk_import``): bad rows are reported by line
and the good ones kept, each batch committed on its own. Exposures are resolved one query per
batch and experiment, never per row. On PostgreSQL each batch is then written by one
statement sent without waiting, so the server writes batch N while Python parses batch N+1
(and, on a second pooled connection, resolves it); memory stays flat whatever the body's
length. ``bench/ingest_outcomes.py`` measures it (figures in ``bench/RESULTS.md``).
"""

from experiments.outcomes.resolving import DecisionExposures
from experiments.outcomes.schemas import OutcomeIn, OutcomeType, SubscriberId
from experiments.outcomes.service import import_outcomes, outcome_json, record_outcome

__all__ = [
    "DecisionExposures",
    "OutcomeIn",
    "OutcomeType",
    "SubscriberId",
    "import_outcomes",
    "outcome_json",
    "record_outcome",
]
