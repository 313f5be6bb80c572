"""Command line: ``python -m taapit_async <command>``.

Commands:
    outbox        Inspect and repair an outbox file: status, list, retry, purge.
    fake-server   Serve the fake Taapit API on 127.0.0.1 (needs ``taapit-async[server]``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

_USAGE = """usage: python -m taapit_async <command> [options]

commands:
  outbox        inspect and repair an outbox file (see: outbox --help)
  fake-server   serve the fake Taapit API on 127.0.0.1 (see: fake-server --help)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "outbox":
        from taapit_async._outbox_cli import main as outbox  # noqa: PLC0415

        return outbox(rest)
    if command == "fake-server":
        try:
            from taapit_async.testing._server import main as fake_server  # noqa: PLC0415
        except ImportError as exc:  # uvicorn is an optional extra
            print(exc, file=sys.stderr)
            return 2
        return fake_server(rest)
    print(f"unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
