"""The savings dashboard: one HTML page, one script, one stylesheet, all shipped in the package.

The route serves static files only; the page reads the same JSON endpoints as any client
(``/v1/nometer/report``, ``/readyz``), with the caller's key, so scoping (admin sees everything,
a team key its own team) is enforced where the data is, not here. Nothing is loaded from outside
the gateway: the content security policy forbids it, so the page works offline.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway import errors

ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_HEADERS = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the page URL may carry ?key=
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


@cache
def _read(name: str) -> bytes:
    return (resources.files("gateway.routes") / "static" / name).read_bytes()


async def page(request: Request) -> Response:
    return Response(_read("dashboard.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise errors.RouteNotFound(f"No dashboard asset `{name}`.")
    return Response(_read(name), media_type=ASSETS[name], headers=_HEADERS)


async def slash(request: Request) -> Response:
    # the page uses relative URLs (it may sit behind a path prefix): keep it at /dashboard
    return RedirectResponse(
        "../dashboard" + (f"?{request.url.query}" if request.url.query else ""), status_code=308
    )


routes = [
    Route("/dashboard", page),
    Route("/dashboard/", slash),
    Route("/dashboard/{name}", asset),
]
