"""Apps for the launcher tests: each answers with qatpy.ssl.stats() of the worker that served the
request.  ``?hold=S`` first blocks the worker for S seconds (not the event loop's way: really
blocked), so that concurrent clients must be served by another worker."""

import json
import time
from urllib.parse import parse_qs

import qatpy.ssl


def _hold(query: str) -> None:
    hold = parse_qs(query).get("hold")
    if hold:
        time.sleep(min(2.0, float(hold[0])))


def app(environ, start_response):
    """WSGI (gunicorn)."""
    _hold(environ.get("QUERY_STRING", ""))
    body = json.dumps(qatpy.ssl.stats()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    """ASGI (uvicorn)."""
    if scope["type"] != "http":
        return
    _hold(scope.get("query_string", b"").decode())
    body = json.dumps(qatpy.ssl.stats()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
