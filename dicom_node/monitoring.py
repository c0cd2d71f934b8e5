"""``/healthz`` and Prometheus ``/metrics`` on a loopback HTTP port (stdlib, a daemon thread).

``GET /healthz``: 200 and ``{"status": "ok", ...}`` when the DICOM listener listens, the state
database answers, every configured worker process is alive and the sender runs; 503 and
``"status": "degraded"`` with the failing parts otherwise. ``GET /metrics``: the Prometheus
text format (see docs/operations.md for the list). No authentication: bind it to loopback
(``http.host = "127.0.0.1"``) and let the monitoring agent scrape locally.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .logs import event

log = logging.getLogger("calcnode.http")


class _Handler(BaseHTTPRequestHandler):
    node = None  # set on the per-server subclass

    def do_GET(self):  # noqa: N802 - http.server API
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                ok, body = self.node.health()
                self._reply(200 if ok else 503, "application/json", json.dumps(body, indent=1))
            elif path == "/metrics":
                self._reply(200, "text/plain; version=0.0.4; charset=utf-8", self.node.metrics_text())
            else:
                self._reply(404, "text/plain", "not found: try /healthz or /metrics\n")
        except Exception as exc:  # noqa: BLE001 - monitoring must never take the node down
            self._reply(500, "text/plain", f"error: {type(exc).__name__}: {exc}\n")

    def _reply(self, code: int, content_type: str, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr lines
        pass


class MonitoringServer:
    def __init__(self, node, host: str, port: int):
        handler = type("Handler", (_Handler,), {"node": node})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="calcnode-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        event(log, logging.INFO, "monitoring listening", url=f"http://{self.host}:{self.port}/healthz")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
