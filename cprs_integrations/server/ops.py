"""Operations routes: ``/healthz`` and ``/readyz`` (always open), ``/metrics``, ``/docs`` and ``/openapi.json``
(behind the API key unless configured open)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cprs_integrations.server.auth import require_api_key


def ops_routers(metrics_open: bool, docs_open: bool) -> list[APIRouter]:
    """The routers of the operations routes, each behind the API key or not as configured."""
    guarded = [Depends(require_api_key)]
    health = APIRouter(tags=["operations"])
    health.add_api_route("/healthz", healthz, methods=["GET"], summary="The process is up")
    health.add_api_route("/readyz", readyz, methods=["GET"], summary="The critic is loaded")
    metrics = APIRouter(tags=["operations"], dependencies=[] if metrics_open else guarded)
    metrics.add_api_route("/metrics", metrics_text, methods=["GET"], summary="Prometheus metrics")
    docs = APIRouter(dependencies=[] if docs_open else guarded, include_in_schema=False)
    docs.add_api_route("/openapi.json", openapi_json, methods=["GET"])
    docs.add_api_route("/docs", docs_page, methods=["GET"])
    return [health, metrics, docs]


async def healthz() -> dict[str, str]:
    """200 while the process serves requests (the critic may still be loading)."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """200 ``ready`` once the critic is loaded; 503 ``loading`` or ``failed`` (with the error) before."""
    holder = request.app.state.holder
    body: dict[str, Any] = {"status": holder.state}
    if holder.error is not None:
        body["error"] = holder.error
    return JSONResponse(body, status_code=200 if holder.state == "ready" else 503)


async def metrics_text(request: Request) -> Response:
    """Prometheus text format (see :mod:`cprs_integrations.server.metrics`)."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> JSONResponse:
    app: FastAPI = request.app
    return JSONResponse(app.openapi())


async def docs_page(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - docs")
