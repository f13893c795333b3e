"""`python -m kubetune.router --config FILE --port N`: heavy imports wait until after argument parsing."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune.router",
        description="OpenAI-compatible weighted, sticky, streaming router for a ModelDeployment's variants.",
    )
    parser.add_argument("--config", type=Path, required=True, help="Router config (JSON/YAML), hot-reloaded.")
    parser.add_argument("--host", default="0.0.0.0", help="Listen address (default 0.0.0.0).")  # noqa: S104
    parser.add_argument("--port", type=int, default=8080, help="Listen port (default 8080).")
    parser.add_argument("--reload-interval", type=float, default=1.0, help="Seconds between config polls.")
    parser.add_argument("--log-level", default="INFO", help="Python log level (default INFO).")
    parser.add_argument("--no-uvloop", action="store_true", help="Use asyncio's default event loop.")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from kubetune.router.app import create_app
    from kubetune.router.source import FileConfigSource

    source = FileConfigSource(args.config, args.reload_interval)
    app = create_app(source.load(), source=source)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=1024, reuse_address=True)
    await site.start()
    logging.getLogger("kubetune.router").info("listening on %s:%d", args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        # Stops accepting, then waits (aiohttp's shutdown_timeout) for in-flight streams to finish.
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(serve(args))
            return
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
