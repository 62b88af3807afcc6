"""Typed readers for environment variables.

Every setting Parley reads from the environment goes through these helpers, so a typo in a
deployment fails loudly at start-up instead of quietly meaning something else.
"""

import os
from urllib.parse import parse_qs, unquote, urlsplit


class ImproperlyConfiguredEnv(Exception):
    pass


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfiguredEnv(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name} must be a whole number, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value in (None, ""):
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def database_config(url: str) -> dict:
    """Turn postgresql://user:pass@host:port/name?opt=v into Django's DATABASES entry.

    A unix-socket directory may be given as `?host=/path` (libpq's own convention), which is
    how the embedded server is reached.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise ImproperlyConfiguredEnv(f"DATABASE_URL must be a postgresql:// URL, not {url!r}")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = options.pop("host", None) or unquote(parts.hostname or "")
    return {
        "ENGINE": "apps.core.postgresql",  # Django's, knowing server-side binding's limit
        "NAME": unquote(parts.path.lstrip("/")) or "parley",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
    }


DRIVER_OPTIONS = ("server_side_binding", "prepare_threshold", "pool", "isolation_level", "assume_role")


def database_url(config: dict) -> str:
    """The inverse of database_config, used to hand a test database to child processes."""
    from urllib.parse import quote, urlencode

    auth = quote(config["USER"] or "")
    if config.get("PASSWORD"):
        auth += ":" + quote(config["PASSWORD"])
    host = config.get("HOST") or ""
    # What libpq reads, not Django's and psycopg's own settings (config/settings.py sets those in
    # every process): pg_dump refuses a parameter it does not know.
    query = {key: value for key, value in (config.get("OPTIONS") or {}).items() if key not in DRIVER_OPTIONS}
    netloc = f"{auth}@" if auth else ""
    if host.startswith("/"):
        query["host"] = host
    else:
        netloc += host + (f":{config['PORT']}" if config.get("PORT") else "")
    suffix = f"?{urlencode(query, quote_via=quote)}" if query else ""  # libpq reads "+" as a plus, not a space
    return f"postgresql://{netloc}/{quote(config['NAME'])}{suffix}"
