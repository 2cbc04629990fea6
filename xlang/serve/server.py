"""Running the app: a socket bound before anything slow (so a taken port is one clear error), uvicorn on it,
one ready line, and a clean exit on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from xlang.errors import XlangError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. XlangError when it cannot be had."""
    if not 0 <= port <= 65535:
        raise XlangError(f"--port {port} is not a TCP port (0 to 65535; 0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise XlangError(f"--host {host!r} cannot be resolved: {error.strerror}") from error
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise XlangError(
            f"cannot listen on {host}:{port}: {error.strerror}; choose another --port (0 picks a free one)"
        ) from error
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket, host: str) -> str:
    """`http://HOST:PORT/v1` for the bound socket (the port it really got)."""
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def run(
    app: Any,
    sock: socket.socket,
    *,
    on_ready: Callable[[], None],
    on_stop: Callable[[], None] = lambda: None,
    access_log: bool = False,
) -> int:
    """Serve `app` on `sock` until SIGTERM (exit status 0) or SIGINT (130); `on_ready` runs once uvicorn
    accepts connections, `on_stop` when a signal arrives (e.g. to stop generations between tokens)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",  # uvicorn logs each request at info
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    received: list[int] = []

    def remember(signum: int, frame: Any) -> None:
        # uvicorn re-raises the signal it caught once it has shut down; it lands here, not in the default
        # handler that would kill the process
        received.append(signum)

    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def main() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            on_ready()
        while not serving.done():
            if server.should_exit:
                on_stop()
            await asyncio.wait([serving], timeout=0.1)
        serving.result()

    try:
        asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return 130 if signal.SIGINT in received else 0


def print_ready(name: str, url: str) -> None:
    """The one line a script waits for: `serving NAME at URL`."""
    sys.stdout.write(f"serving {name} at {url}\n")
    sys.stdout.flush()
