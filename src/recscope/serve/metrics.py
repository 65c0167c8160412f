"""Prometheus metrics of the service: requests by route template and status, and latency; how
long each worker took to apply the store's changes (serve.follow).

Each app has its own registry (two apps in one process, as in tests, do not collide). With
several worker processes (``recscope serve --workers N``) the CLI sets ``PROMETHEUS_MULTIPROC_DIR``
before the workers start: each worker's values go to files there (prometheus-client's
multiprocess mode) and ``/metrics``, whichever worker answers it, adds up every worker's, a
replaced worker's counts included. Routes are labelled by their template
(``/users/{user_id:path}/recommendations``), never the raw path, so ids do not explode the
label space; a path no route matched is ``unmatched``.
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

router = APIRouter(tags=["health"])
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"  # set: the workers share their values through files there


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recscope_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recscope_http_request_duration_seconds",
            "time from request to the end of the response, by method and route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.applied = Histogram(
            "recscope_store_change_apply_seconds",
            "time from a store change's commit (an item added or removed, an item hidden or shown, a version "
            "to serve, a user forgotten) to this worker serving it, by kind; every worker counts each change "
            "(the worker that wrote it too); the clocks of the writing and the applying host",
            ["kind"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: ``recscope_http_requests_total``, the latency histogram and the
    store changes' apply histogram."""
    registry = request.app.state.metrics.registry
    if os.environ.get(MULTIPROCESS):  # every worker's values, from their files
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
