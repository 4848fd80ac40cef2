import pytest

from infra.settings import Settings, SettingsError, settings_table


def test_defaults_use_sqlite_and_embedded_redis(tmp_path):
    s = Settings.from_env({"CAREPILOT_INSTANCE_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'carepilot.db'}"
    assert s.redis_url == "" and s.port == 8000
    assert len(s.secret_key) > 40
    assert Settings.from_env({"CAREPILOT_INSTANCE_DIR": str(tmp_path)}).secret_key == s.secret_key


def test_postgres_urls_get_the_psycopg_driver(tmp_path):
    s = Settings.from_env({"CAREPILOT_INSTANCE_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@h:5432/db"})
    assert s.database_url == "postgresql+psycopg://u@h:5432/db"


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"PORT": "eighty"}, "PORT='eighty' is not a whole number"),
        ({"PORT": "70000"}, "PORT=70000 is outside 1..65535"),
        ({"CAREPILOT_LOG_LEVEL": "LOUD"}, "CAREPILOT_LOG_LEVEL"),
        ({"DATABASE_URL": "mysql://x"}, "only sqlite"),
        ({"REDIS_URL": "localhost:6379"}, "must start with redis://"),
        ({"CAREPILOT_SESSION_COOKIE_SECURE": "maybe"}, "not a boolean"),
        ({"CAREPILOT_REDIS_DECISION_TIMEOUT_MS": "5"}, "CAREPILOT_REDIS_DECISION_TIMEOUT_MS=5 is outside 10..10000"),
        ({"CAREPILOT_PROT": "1"}, "unknown setting(s) CAREPILOT_PROT"),
    ],
)
def test_malformed_settings_stop_with_a_clear_message(env, needle, tmp_path):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"CAREPILOT_INSTANCE_DIR": str(tmp_path), **env})
    assert needle in str(err.value)


def test_every_setting_is_documented_in_the_readme():
    from infra.settings import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [name for name, _ in settings_table() if f"`{name}`" not in readme]
    assert missing == []
