"""``python -m llmlabel.testing --port N --script file.json``: the fake server in its own process.

For tests that kill or crash things out of process. Prints ``READY http://HOST:PORT/v1`` on
stdout once listening (``--port 0`` picks a free port), serves until SIGTERM or SIGINT. The
script's JSON form is documented in ``llmlabel.testing.responders.responder_from_config``;
``GET /_fake/stats`` reports what was received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from llmlabel.testing.responders import Responder, as_responder, responder_from_config
from llmlabel.testing.server import serve

READY_PREFIX = "READY "


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmlabel.testing",
        description="Scriptable OpenAI-compatible chat-completions server for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--script", type=Path, help="JSON script (default: answer 'OK')")
    parser.add_argument("--model", default="fake", help="model name when a request has none")
    return parser


def load_script(path: Path) -> Responder:
    """The responder described by a JSON script file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read script {path}: {exc}") from None
    try:
        return responder_from_config(config)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"invalid script {path}: {exc}") from None


async def _main(args: argparse.Namespace, responder: Responder) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready(port: int) -> None:
        print(f"{READY_PREFIX}http://{args.host}:{port}/v1", flush=True)

    await serve(
        responder, host=args.host, port=args.port, model=args.model, on_ready=ready, stop=stop
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    responder = load_script(args.script) if args.script else as_responder(None)
    asyncio.run(_main(args, responder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
