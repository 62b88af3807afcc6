"""`python -m apps.connectors.simulator [--host H] [--port P] [--channels FILE] [--quiet]`"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import build_simulator, make_server
from .core import LOOPBACK_HOSTS, ControlError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m apps.connectors.simulator")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        choices=sorted(LOOPBACK_HOSTS),
        help="loopback address to bind (default 127.0.0.1); the simulator never listens beyond this machine",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SIMULATOR_PORT") or 8025),
        help="port (default $SIMULATOR_PORT or 8025; 0 picks a free one)",
    )
    parser.add_argument("--channels", type=Path, help="JSON list of channel registrations to load at start")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser.parse_args(argv)


def load_channels(simulator, path: Path) -> None:
    registrations = json.loads(path.read_text())
    if not isinstance(registrations, list):
        raise SystemExit(f"{path}: expected a JSON list of channel registrations")
    for registration in registrations:
        provider = simulator.providers.get(registration.get("kind") or simulator.default_kind)
        if provider is None:
            raise SystemExit(f"{path}: unknown kind {registration.get('kind')!r}")
        try:
            provider.register_channel(registration)
        except ControlError as exc:
            raise SystemExit(f"{path}: {exc}") from exc


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    simulator = build_simulator()
    if args.channels:
        load_channels(simulator, args.channels)
    server = make_server(simulator, args.host, args.port, verbose=not args.quiet)
    print(f"simulator listening on {simulator.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
