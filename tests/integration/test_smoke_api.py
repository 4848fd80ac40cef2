def test_create_offer_and_read_it_back(client, auth, db):
    body = {"code": "CARE_SMS", "name": "Care SMS", "unit_cost": 0.05, "channels": ["sms"],
            "eligibility": {"churn_score": {"$gte": 0.3}}}
    r = client.post("/api/v1/offers", json=body, headers=auth["marketing"])
    assert r.status_code == 201, r.json
    assert r.json["unit_cost"] == 0.05
    r = client.get("/api/v1/offers/CARE_SMS", headers=auth["analyst"])
    assert r.status_code == 200 and r.json["channels"] == ["sms"]
