"""The start the outcome and statistics tests share: the Care SMS offer in the catalogue and an
experiment on it moved to its pilot, through the API as marketing."""

from __future__ import annotations

from typing import Any

CARE_SMS = {"code": "CARE_SMS", "name": "Care SMS", "unit_cost": 0.05, "channels": ["sms"]}


def start_care_sms_pilot(client, auth, experiment: dict[str, Any]) -> None:
    """Create the Care SMS offer and ``experiment``, and move the experiment to its pilot."""
    assert client.post("/api/v1/offers", json=CARE_SMS, headers=auth["marketing"]).status_code == 201
    assert client.post("/api/v1/experiments", json=experiment, headers=auth["marketing"]).status_code == 201
    r = client.post(
        f"/api/v1/experiments/{experiment['key']}/transition", json={"to": "pilot"}, headers=auth["marketing"]
    )
    assert r.status_code == 200, r.json
