"""The embedded servers of `make run` / `make test`, started in a scratch folder: they come up
from pip packages alone, serve a real connection, and are gone when the command ends."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import psycopg, redis
from config import embedded
pg = embedded.postgres_url()
with psycopg.connect(pg) as conn:
    print(conn.execute("select current_database()").fetchone()[0])
r = redis.Redis.from_url(embedded.redis_url())
r.set("probe", "ok")
print(r.get("probe").decode())
"""


def test_embedded_servers_start_serve_and_stop(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["PARLEY_VAR_DIR"] = str(var)

    result = subprocess.run(
        [sys.executable, "-m", "config.embedded", "with", "--", sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["parley", "ok"]
    assert "Stopped embedded PostgreSQL and Redis" in result.stderr
    status = subprocess.run(
        [sys.executable, "-m", "config.embedded", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "postgres: stopped" in status
    assert "redis: stopped" in status
