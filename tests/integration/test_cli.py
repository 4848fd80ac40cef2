"""The `flask --app wsgi …` commands."""

from __future__ import annotations

from sqlalchemy import select

from infra.auth_models import ApiKey, User
from offers.models import Subscriber


def test_create_user_and_keys(app, db, redis):
    runner = app.test_cli_runner()
    r = runner.invoke(
        args=["create-user", "--email", "Ops@Example.test", "--role", "admin", "--password", "a long password"]
    )
    assert r.exit_code == 0, r.output
    assert db.scalar(select(User).where(User.email == "ops@example.test")).role == "admin"
    r = runner.invoke(
        args=["create-user", "--email", "ops@example.test", "--role", "admin", "--password", "a long password"]
    )
    assert r.exit_code != 0 and "exists" in r.output

    r = runner.invoke(args=["create-api-key", "--name", "gateway", "--channel", "sms"])
    assert r.exit_code == 0, r.output
    raw = r.output.strip().splitlines()[-1]
    assert raw.startswith("cpk_")
    key = db.scalar(select(ApiKey).where(ApiKey.name == "gateway"))
    assert key.channel == "sms" and raw not in key.key_hash
    assert runner.invoke(args=["create-api-key", "--name", "x"]).exit_code != 0
    r = runner.invoke(args=["revoke-api-key", str(key.id)])
    db.expire_all()
    assert r.exit_code == 0 and db.get(ApiKey, key.id).revoked_at is not None
    assert runner.invoke(args=["revoke-api-key", "999999"]).exit_code != 0


def test_import_subscribers_from_a_file(app, db, redis, tmp_path):
    path = tmp_path / "base.csv"
    path.write_text("subscriber_id,arpu\ns1,42\ns2,not-a-number\ns3,7\n")
    r = app.test_cli_runner().invoke(args=["import-subscribers", str(path)])
    assert r.exit_code == 0, r.output
    assert "accepted 2, rejected 1" in r.output and "line 3: arpu" in r.output
    assert sorted(db.scalars(select(Subscriber.id))) == ["s1", "s3"]
