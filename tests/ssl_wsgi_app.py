"""A WSGI app for the gunicorn test: answers with qatpy.ssl.stats() of the worker that served the request."""

import json

import qatpy.ssl


def app(environ, start_response):
    body = json.dumps(qatpy.ssl.stats()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
