"""Loaded with `-p tests.testenv` before Django's settings, so the suite keeps its Redis keys
and Celery queue apart from a development stack running on the same servers."""

import os

os.environ.setdefault("REDIS_KEY_PREFIX", "parley-test")
os.environ.setdefault("CELERY_QUEUE", "parley-test")
# With DATABASE_URL set (CI), DEBUG defaults off and settings demand a SECRET_KEY.
os.environ.setdefault("SECRET_KEY", "parley-tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
# The suite runs with production settings whatever the servers (embedded or named), except that
# the test client speaks plain HTTP.
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("STATIC_FROM_SOURCE", "true")
# The channel simulator listens on 127.0.0.1: outbound requests may reach loopback (apps/core/netguard.py).
os.environ.setdefault("OUTBOUND_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
