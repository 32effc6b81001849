"""One app for two servers. `wsgi` for gunicorn (reads LISTEN_FDS, sends READY=1 itself):

    graceful-run -l 8080 --ready notify -- gunicorn --workers 2 app:wsgi

`asgi` for uvicorn (`--fd 3`; sends no READY=1, so let graceful-run detect readiness):

    graceful-run -l 8080 --ready auto -- uvicorn --fd 3 app:asgi
"""
import asyncio
import os
import time
from urllib.parse import parse_qs


def _answer(path, query):
    """(delay in seconds, body) for a request."""
    pid = os.getpid()
    if path == "/slow":
        ms = int(parse_qs(query).get("ms", ["1000"])[0])
        return ms / 1000, f"slow response from pid {pid} after {ms} ms\n".encode()
    return 0, f"hello from pid {pid}\n".encode()


def _headers(body):
    return [("Content-Length", str(len(body))), ("X-Pid", str(os.getpid()))]


def wsgi(environ, start_response):
    delay, body = _answer(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    time.sleep(delay)
    start_response("200 OK", _headers(body))
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    delay, body = _answer(scope["path"], scope["query_string"].decode())
    await asyncio.sleep(delay)
    headers = [(k.lower().encode(), v.encode()) for k, v in _headers(body)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
