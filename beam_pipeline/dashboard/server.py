"""The dashboard's HTTP server: the Python standard library's ThreadingHTTPServer, a JSON API and three static
files (``static/``: index.html, app.js, app.css). No template renders data into HTML: the page fetches JSON
and builds its DOM with ``textContent``.

Routes (GET only)::

    /                         the page          /static/app.js, /static/app.css
    /api/roots                the output roots served, with their event-log versions
    /api/version?root=I       events version + recommendations version (the page polls this)
    /api/meta?root=I          tables present, gold families, filter choices
    /api/insights?root=I&from=&to=&main_cat=&brand=&verified=1
    /api/trending?root=I&day=YYYY-MM-DD
    /api/reviewers?root=I     suggested reviewers;  /api/reviewer?root=I&id=REVIEWER
    /api/health?root=I        run history, dead letters by reason, streaming freshness
    /api/dead_letters?root=I&reason=&stage=&record_type=&q=&offset=&limit=

Every response carries a Content-Security-Policy that allows scripts and styles from this origin only
(no inline script, no inline handlers), ``X-Content-Type-Options: nosniff`` and the right content type.
When bound to a loopback address the server answers only requests whose Host header names loopback
(a DNS-rebinding page cannot read it).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from beam_pipeline.dashboard import data

LOG = logging.getLogger("reviews.dashboard")
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/index.html": ("index.html", "text/html; charset=utf-8"),
                "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/static/app.css": ("app.css", "text/css; charset=utf-8"),
                "/favicon.ico": (None, None)}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host):
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_of(header):
    """The host name of a Host header ("127.0.0.1:8050", "[::1]:8050", "localhost")."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Dashboard:
    """What the handler serves: the roots (``data.Root``), by index."""

    def __init__(self, roots):
        self.roots = roots

    def root(self, query):
        raw = query.get("root") or "0"
        try:
            i = int(raw)
            return self.roots[i]
        except (ValueError, IndexError) as err:
            raise KeyError(f"no output root {raw!r} (0..{len(self.roots) - 1})") from err

    def api(self, path, query):
        if path == "/api/roots":
            return {"roots": [{"index": i, "name": r.name, "path": r.path, "events_version": r.version()}
                              for i, r in enumerate(self.roots)]}
        root = self.root(query)
        if path == "/api/version":
            return {"events_version": root.version(), "recommendations_version": root.recommendations_version()}
        if path == "/api/meta":
            return data.meta(root)
        if path == "/api/insights":
            return data.insights(root, data.parse_filters(query))
        if path == "/api/trending":
            return data.trending(root, query.get("day") or None)
        if path == "/api/reviewers":
            return {"reviewers": data.reviewer_suggestions(root)}
        if path == "/api/reviewer":
            rid = query.get("id")
            if not rid:
                raise ValueError("id= is required")
            return data.reviewer(root, rid)
        if path == "/api/health":
            return data.health(root)
        if path == "/api/dead_letters":
            return data.dead_letters(root, query)
        raise FileNotFoundError(path)


def make_handler(dashboard, check_host):
    class Handler(BaseHTTPRequestHandler):
        server_version = "reviews-dashboard"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # noqa: D102 - quiet by default; --verbose logs requests
            LOG.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status, obj):
            body = json.dumps(obj, allow_nan=False, separators=(",", ":"), default=str).encode("utf-8")
            self._send(status, body, "application/json; charset=utf-8")

        def do_HEAD(self):  # noqa: N802
            self.do_GET()

        def do_GET(self):  # noqa: N802
            url = urlsplit(self.path)
            if check_host:
                if not is_loopback(host_of(self.headers.get("Host") or "")):
                    return self._send(HTTPStatus.FORBIDDEN, b"forbidden host\n", "text/plain; charset=utf-8")
            if url.path in STATIC_FILES:
                name, ctype = STATIC_FILES[url.path]
                if name is None:
                    return self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
                with open(os.path.join(STATIC, name), "rb") as fh:
                    return self._send(HTTPStatus.OK, fh.read(), ctype)
            if not url.path.startswith("/api/"):
                return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            started = time.perf_counter()
            try:
                result = dashboard.api(url.path, query)
            except FileNotFoundError:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such API: {url.path}"})
            except (ValueError, KeyError) as err:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(err).strip("'\"")})
            except Exception as err:  # noqa: BLE001 - the page shows the error; the server goes on
                LOG.error("%s failed: %s\n%s", url.path, err, traceback.format_exc())
                return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(err).__name__}: {err}"})
            LOG.debug("%s %.3fs", self.path, time.perf_counter() - started)
            return self._json(HTTPStatus.OK, result)

    return Handler


class Server:
    """A running dashboard (``start``/``stop``), for the CLI and the tests."""

    def __init__(self, roots, host="127.0.0.1", port=8050):
        self.dashboard = Dashboard(roots)
        self.httpd = ThreadingHTTPServer((host, port), make_handler(self.dashboard, check_host=is_loopback(host)))
        self.httpd.daemon_threads = True
        self.thread = None

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self):
        self.httpd.serve_forever()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
