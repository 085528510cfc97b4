"""The monitoring endpoints, served from a thread of their own:

- `/metrics`: Prometheus text format, or OpenMetrics when the scraper asks for it;
- `/healthz`: 200 while the main loop makes progress, else 503 (liveness);
- `/readyz`: 200 when restored, consuming and Kafka answers, else 503 (readiness);
- `/`: the status page.

The probes answer with a short JSON body that says why.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder

from . import page
from .health import Health
from .metrics import RECENT_DEAD_LETTERS
from .redact import redact
from .status import Snapshot, Throughput

log = logging.getLogger("sessionizer.monitoring")


class Monitor:
    """Everything the endpoints show about one process; its `sessionizer_ready` gauge is what /readyz says."""

    def __init__(self, title: str, facts: dict[str, Any], health: Health, registry: CollectorRegistry,
                 config: dict[str, Any], dead_letters: deque[bytes] | None = None) -> None:
        self.title, self.facts, self.health, self.registry, self.config = title, facts, health, registry, config
        self.dead_letters: deque[bytes] = dead_letters if dead_letters is not None else deque(maxlen=RECENT_DEAD_LETTERS)
        Gauge("sessionizer_ready", "1 while /readyz answers 200 (restored, consuming, Kafka or Xtremepush answering)",
              registry=registry).set_function(lambda: 1.0 if health.is_ready else 0.0)
        self.snapshot = Snapshot()  # replaced whole by the main loop
        self.throughput = Throughput()

    def page(self) -> str:
        return page.render(self.title, self.facts, self.health.liveness(), self.health.readiness(), self.snapshot,
                           self.throughput, list(self.dead_letters), redact(self.config))  # (again: never a secret)


def serve(monitor: Monitor, settings: Any) -> "MonitoringServer | None":
    """The endpoints, when the config has a `[metrics]` table (`settings`: its MetricsSettings or None)."""
    return None if settings is None else MonitoringServer(monitor, settings.host, settings.port)


class MonitoringServer:
    def __init__(self, monitor: Monitor, host: str, port: int) -> None:
        monitor_ = monitor

        class Handler(_Handler):
            monitor = monitor_

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="monitoring", daemon=True)
        self._thread.start()
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        log.info("monitoring endpoints up", extra={"status_page": f"http://{shown}:{self.port}/",
                                                   "metrics": f"http://{shown}:{self.port}/metrics"})

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    monitor: Monitor
    server_version = "sessionizer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept"))
                self._send(200, content_type, encoder(self.monitor.registry))
            elif path == "/healthz":
                self._probe(*self.monitor.health.liveness())
            elif path == "/readyz":
                self._probe(*self.monitor.health.readiness())
            elif path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", self.monitor.page().encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /, /metrics, /healthz or /readyz\n")
        except BrokenPipeError:
            pass
        except Exception:  # a bug here must never reach the job: the request gets a 500
            log.exception("monitoring request failed", extra={"path": path})
            self._send(500, "text/plain; charset=utf-8", b"internal error\n")

    def _probe(self, ok: bool, body: dict[str, Any]) -> None:
        self._send(200 if ok else 503, "application/json", orjson.dumps(body) + b"\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # requests are not logged: scrapes every few seconds
        pass
