"""Running the server: the serve extra checked, one thread for the arithmetic, the socket bound
before anyone is told the address, and Ctrl-C ending it cleanly."""

from __future__ import annotations

import copy
import ipaddress
import signal
import socket
from collections.abc import Callable
from typing import Any

from charnn.checkpoints.loading import LoadedModel
from charnn.errors import CharnnError

EXTRA_HINT = "charnn serve needs the serve extra: pip install 'charnn[serve]'"


def check_installed() -> None:
    try:
        import starlette  # noqa: F401
        import threadpoolctl  # type: ignore[import-untyped]  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CharnnError(EXTRA_HINT) from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def single_threaded() -> None:
    """One thread for NumPy's BLAS and for PyTorch, for the whole process: the server's
    parallelism is the batch of requests stepped together. BLAS threads that spin on a step's
    small products cost more than they give, and far more when the cores are busy (a 2x256
    step at batch 1 on a loaded 2-core machine: 0.26 ms with one thread, 19 ms with two)."""
    import torch
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(1, user_api="blas")
    torch.set_num_threads(1)


def serve(
    loaded: LoadedModel,
    settings: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    access_log: bool = True,
    on_ready: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve until interrupted. The socket is bound before `on_ready(url)` is called (port 0
    picks a free one), so a client may connect as soon as it hears the address. Ctrl-C ends
    the running generations, lets uvicorn close the connections and raises KeyboardInterrupt."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from charnn.serve.app import create_app

    single_threaded()
    app = create_app(loaded, settings)
    engine = app.state.engine
    logging = copy.deepcopy(LOGGING_CONFIG)
    for handler in logging["handlers"].values():  # stdout carries data only: logs to stderr
        handler["stream"] = "ext://sys.stderr"
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_config=logging,
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        interrupted = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            engine.stop()  # open streams end now, so the shutdown need not wait for them
            self.interrupted |= sig == signal.SIGINT
            super().handle_exit(sig, frame)

    try:
        sock = config.bind_socket()
        # uvicorn's bind_socket only binds; listening now lets a client that connects as soon
        # as it hears the address queue up instead of being refused before the loop starts
        sock.listen(config.backlog)
    except (OSError, SystemExit) as err:
        raise CharnnError(f"cannot listen on {host}:{port} ({err})") from None
    address = sock.getsockname()
    shown = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
    on_ready(f"http://{shown}:{address[1]}")
    server = Server(config)
    server.run(sockets=[sock])
    if server.interrupted:  # uvicorn re-raises the signal itself; older releases did not
        raise KeyboardInterrupt
