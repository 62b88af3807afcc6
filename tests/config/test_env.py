import pytest

from config.env import ImproperlyConfiguredEnv, database_config, database_url, env_bool


def test_database_url_with_host_and_port():
    config = database_config("postgresql://app:s%3Acret@db.internal:6432/parley?sslmode=require")

    assert config["NAME"] == "parley"
    assert (config["USER"], config["PASSWORD"]) == ("app", "s:cret")
    assert (config["HOST"], config["PORT"]) == ("db.internal", "6432")
    assert config["OPTIONS"] == {"sslmode": "require"}


def test_database_url_with_unix_socket_directory():
    config = database_config("postgresql://postgres@/parley?host=/srv/parley/var/pg")

    assert config["HOST"] == "/srv/parley/var/pg"
    assert config["OPTIONS"] == {}


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@/test_parley?host=/tmp/pg", "postgresql://u:p%40ss@127.0.0.1:5432/x"],
)
def test_database_url_round_trips(url):
    assert database_config(database_url(database_config(url))) == database_config(url)


def test_non_postgres_database_url_is_refused():
    with pytest.raises(ImproperlyConfiguredEnv, match="postgresql://"):
        database_config("mysql://root@localhost/parley")


def test_env_bool_refuses_anything_but_true_or_false(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfiguredEnv, match="DEBUG"):
        env_bool("DEBUG", default=False)
    monkeypatch.setenv("DEBUG", "off")
    assert env_bool("DEBUG", default=True) is False


def test_a_database_url_for_child_processes_leaves_out_what_only_django_and_psycopg_read():
    """pg_dump and psql take the URL too, and refuse a parameter libpq does not know; the child
    processes' settings set these themselves (config/settings.py)."""
    config = database_config("postgresql://postgres@127.0.0.1:5432/parley?options=-c%20jit%3Doff")
    config["OPTIONS"].update(server_side_binding=True, prepare_threshold=5, pool={"max_size": 4})

    assert database_url(config) == "postgresql://postgres@127.0.0.1:5432/parley?options=-c%20jit%3Doff"
