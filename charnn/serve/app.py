"""The HTTP side: Starlette routes over the batching engine.

    GET  /                   {"message": ...}                          torch-rnn-server
    GET  /generate           {"start_text", "completions", "time"}     torch-rnn-server
    POST /v1/sample          {"samples": [...], "prime", "seed", ...}  or server-sent events
    GET  /v1/model           what the model is and the server's limits
    GET  /v1/health          rows being generated, requests waiting
    GET  /ui                 a page to try the model: its form streams text from /v1/sample

Every error is JSON with a 4xx status: {"error": "<what is wrong>", "message": "<the same>"}
("message" is what rnn-writer shows; for a missing or wrong API key it is "Forbidden", the text
rnn-writer recognises). Each route reads the model, the engine and the settings from the app's
state (`Served`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from charnn import __version__
from charnn.checkpoints.loading import LoadedModel
from charnn.config.sample import SampleConfig
from charnn.generation.beam import beam_search
from charnn.nn.model import num_parameters
from charnn.serve import requests as rq
from charnn.serve.engine import Engine, Job, Result, Until

PAGE = "/ui"  # beside torch-rnn-server's routes, which rnn-writer calls
# The page's own meta tag's policy, and what only a header can say: no other site may frame it
PAGE_POLICY = ("default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; "
               "style-src 'unsafe-inline'; frame-ancestors 'none'")  # fmt: skip


@dataclass(frozen=True)
class ServeSettings:
    max_length: int = 2000  # characters per sample at most
    api_key: str | None = None  # when set, every request needs it in the x-api-key header
    cors_origins: tuple[str, ...] = ()  # web pages (origins) allowed to call the API
    max_rows: int = 64  # rows generated together at most


@dataclass(frozen=True)
class Served:
    """What the routes share: the model, its engine and the server's settings."""

    loaded: LoadedModel
    engine: Engine
    settings: ServeSettings

    @property
    def limits(self) -> rq.Limits:
        return rq.Limits(max_length=self.settings.max_length)


def served(request: Request) -> Served:
    return request.app.state.served  # type: ignore[no-any-return]


def error(message: str, status: int, shown: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "message": shown or message}, status_code=status)


class Pending:
    """The asyncio side of one job: the worker thread's events arrive on a queue."""

    def __init__(
        self, engine: Engine, config: SampleConfig, stream: bool = False, until: Until | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.job = Job(config, self._deliver, stream, until)
        engine.submit(self.job)

    def _deliver(self, event: tuple[str, Any]) -> None:  # on the worker thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def result(self) -> Result:
        while True:
            kind, value = await self.queue.get()
            if kind == "end":
                return value  # type: ignore[no-any-return]


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def results_unless_gone(request: Request, pendings: list[Pending]) -> list[Result] | None:
    """The jobs' results, or None when the client went away first (its jobs are then stopped)."""
    gone: asyncio.Future[Any] = asyncio.ensure_future(_client_gone(request))
    work: asyncio.Future[Any] = asyncio.ensure_future(
        asyncio.gather(*(p.result() for p in pendings))
    )
    try:
        done, _ = await asyncio.wait({gone, work}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return list(work.result())
        for pending in pendings:
            pending.job.cancel()
        work.cancel()
        return None
    finally:
        gone.cancel()


def _answer(config: SampleConfig, result: Result) -> dict[str, Any]:
    samples = zip(result.texts, result.finish_reasons, strict=True)
    return {
        "samples": [
            {"index": i, "text": text, "finish_reason": reason}
            for i, (text, reason) in enumerate(samples)
        ],
        "prime": config.prime,
        "seed": config.seed,
        "time": round(result.seconds, 3),
    }


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def home(request: Request) -> Response:
    path = served(request).loaded.path
    shown = f"{path.parent.name}/{path.name}" if served(request).loaded.in_run else path.name
    return JSONResponse({"message": f"charnn {__version__} is serving {shown}. Have fun!"})


async def generate(request: Request) -> Response:
    """torch-rnn-server's completions of `start_text`: it samples until it has `n` good ones;
    here a few rounds, each with twice the candidates still needed (generated together, extra
    ones cost little)."""
    engine, vocab = served(request).engine, served(request).loaded.vocab
    raw = rq.raw_query_value(request.url.query, "start_text")
    n = rq.completion_count(request.query_params.get("n"))
    prime = rq.start_text_prime(request.query_params.get("start_text", ""), vocab)
    started = time.perf_counter()
    draw = np.random.default_rng()
    completions: list[str] = []
    for _ in range(rq.COMPLETION_ROUNDS):
        configs = [
            SampleConfig(
                length=rq.COMPLETION_CHARS,
                prime=prime,
                seed=int(draw.integers(2**32)),
                temperature=float(draw.choice(rq.TEMPERATURES)),
            )  # fmt: skip
            for _ in range(2 * (n - len(completions)) + 2)
        ]
        pendings = [Pending(engine, config, until=rq.sentence_ended) for config in configs]
        results = await results_unless_gone(request, pendings)
        if results is None:
            return Response(status_code=499)
        completions += [r.texts[0] for r in results if rq.good_completion(r.texts[0])]
        if len(completions) >= n:
            break
    elapsed = f"{time.perf_counter() - started:.2f}"
    return JSONResponse({"start_text": raw or "", "completions": completions[:n], "time": elapsed})


async def sample(request: Request) -> Response:
    here = served(request)
    body = rq.parse_body(await request.body())
    parsed = rq.sample_request(body, here.loaded.vocab, here.limits, here.loaded.labels)
    config = parsed.config
    if config.beam is not None:  # a search, not a draw: run beside the batch, whole
        started = time.perf_counter()
        text = await asyncio.to_thread(beam_search, here.loaded, config)
        reason = "length" if len(text) >= config.length else "stop"
        result = Result([text], [reason], time.perf_counter() - started)
        return JSONResponse(_answer(config, result))
    if not parsed.stream:
        results = await results_unless_gone(request, [Pending(here.engine, config)])
        if results is None:
            return Response(status_code=499)
        return JSONResponse(_answer(config, results[0]))
    pending = Pending(here.engine, config, stream=True)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_events(pending, config), media_type="text/event-stream",
                             headers=headers)  # fmt: skip


async def _events(pending: Pending, config: SampleConfig) -> AsyncIterator[str]:
    """A streamed sample as server-sent events: what arrived since the last write, merged by
    row, and at the end the whole answer as an "end" event."""
    try:
        while True:
            batch = [await pending.queue.get()]
            while not pending.queue.empty():  # what arrived meanwhile, in one write
                batch.append(pending.queue.get_nowait())
            merged: dict[int, str] = {}
            end = None
            for kind, value in batch:
                if kind == "end":
                    end = value
                else:
                    for row, piece in value:
                        merged[row] = merged.get(row, "") + piece
            text = "".join(_sse({"index": i, "text": t}) for i, t in merged.items())
            if end is not None:
                yield text + _sse(_answer(config, end), "end")
                return
            yield text
    finally:  # the client went away (Starlette cancels us) or we are done
        pending.job.cancel()


async def model_info(request: Request) -> Response:
    here = served(request)
    loaded, config = here.loaded, here.loaded.model.config
    return JSONResponse({
        "checkpoint": str(loaded.path),
        "cell": config.cell,
        "layers": config.layers,
        "hidden_size": config.hidden_size,
        "embed_size": config.embed_size,
        "parameters": num_parameters(loaded.model),
        "vocab": loaded.vocab.chars,
        "vocab_size": len(loaded.vocab),
        "labels": list(loaded.labels),  # a conditioned model's; "any" besides them
        "step": loaded.step,
        "metrics": loaded.metrics,
        "charnn_version": __version__,
        "limits": {
            "max_length": here.limits.max_length,
            "max_samples": rq.MAX_SAMPLES,
            "max_prime": rq.MAX_PRIME,
        },
    })  # fmt: skip


async def health(request: Request) -> Response:
    engine = served(request).engine
    return JSONResponse({
        "status": "stopping" if engine.stopping.is_set() else "ok",
        "active_rows": engine.active_rows,
        "waiting": engine.incoming.qsize() + len(engine.waiting),
        "steps": engine.ticks,
        "rows_stepped": engine.rows_stepped,
    })  # fmt: skip


async def page(request: Request) -> Response:
    """The live page (no data of its own: with an API key it asks for it, and sends it)."""
    text = resources.files("charnn.serve").joinpath("page.html").read_text(encoding="utf-8")
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}
    return HTMLResponse(text, headers=headers)


async def bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, rq.BadRequest)
    return error(str(exc), exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    what = {
        404: f"no such path: {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return error(what.get(exc.status_code, exc.detail), exc.status_code)


async def internal_error(request: Request, exc: Exception) -> Response:
    traceback.print_exception(exc, file=sys.stderr)  # the operator's log, not the client's
    return error("internal error: the server's log has the details", 500)


ROUTES = [
    Route("/", home),
    Route("/generate", generate),
    Route("/v1/sample", sample, methods=["POST"]),
    Route("/v1/model", model_info),
    Route("/v1/health", health),
    Route(PAGE, page),
]


@asynccontextmanager
async def _engine_running(app: Starlette) -> AsyncIterator[None]:
    engine = app.state.served.engine
    engine.start()
    try:
        yield
    finally:
        engine.stop()
        engine.join(timeout=5)


def create_app(loaded: LoadedModel, settings: ServeSettings) -> Starlette:
    """The ASGI app for one model; its generation worker runs while the app's lifespan does."""
    middleware = [Middleware(ApiKey, key=settings.api_key)]
    if settings.cors_origins:  # outermost: a browser's preflight carries no key
        cors = Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                          allow_methods=["GET", "POST"],
                          allow_headers=["content-type", "x-api-key"])  # fmt: skip
        middleware.insert(0, cors)
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers={
            rq.BadRequest: bad_request,
            HTTPException: http_error,
            Exception: internal_error,
        },
        lifespan=_engine_running,
    )
    app.state.served = Served(loaded, Engine(loaded, max_rows=settings.max_rows), settings)
    app.state.engine = app.state.served.engine
    return app


class ApiKey:
    """Refuses every request without the right x-api-key header (when a key is set), but for
    the page, which holds no data and asks for the key itself."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is not None and scope["type"] == "http" and scope["path"] != PAGE:
            sent = dict(scope["headers"]).get(b"x-api-key", b"")
            if not hmac.compare_digest(sent, self.key):
                problem = "wrong x-api-key header" if sent else "missing x-api-key header"
                response = error(f"{problem}: this server needs its API key", 403, "Forbidden")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
