"""The rules every import's CSV header check shares: a column name may appear once, and a
header with problems is refused with all of them listed, never row by row."""

from __future__ import annotations

from infra.errors import BadRequest


def repeated_columns(names: list[str]) -> list[str]:
    """The problem of ``names`` that repeat (blank names aside, which are a problem of their
    own): one sentence naming them, or none."""
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    return [f"repeated column(s) {', '.join(repeated)}"] if repeated else []


def refuse_bad_header(problems: list[str]) -> None:
    """BadRequest (``invalid_csv_header``) listing every one of ``problems``; nothing when
    there are none."""
    if problems:
        raise BadRequest(
            "the CSV header is not valid: " + "; ".join(problems), code="invalid_csv_header", details=problems
        )
