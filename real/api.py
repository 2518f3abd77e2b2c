"""The daemon's local control API: JSON over HTTP, loopback by default.

=========================  ===========================================  ==================
request                    body (JSON)                                  does
=========================  ===========================================  ==================
``GET  /status``                                                        state and metrics
``GET  /metrics``                                                       Prometheus text
``POST /episode/start``    ``{"seed": 3}`` (optional)                   start an episode
``POST /episode/stop``     ``{"success": true}`` (optional label)       end it, record it
``POST /label``            ``{"success": false}``                       label the running one
``POST /estop``                                                         latch the e-stop
``POST /estop/clear``                                                   operator resumes
``POST /policy``           ``{"path": "runs/push_dsrl/policy"}``        load a checkpoint
``POST /intervention``     ``{"on": true, "action": [0.1, 0.0]}``       human takes over
=========================  ===========================================  ==================

Bound to a non-loopback address the server refuses to start without a token, and then every
request needs ``Authorization: Bearer <token>`` (401 otherwise). Malformed requests get a 4xx
with a message naming the problem; handlers only set requests that the control thread applies
at its next tick, so no request can stall the loop.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from real.daemon import DaemonError, RobotDaemon

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ControlServer:
    """Serves the API of ``daemon`` on ``host:port`` (port 0: any free port) in a thread."""

    def __init__(
        self,
        daemon: RobotDaemon,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        load_policy: Callable[[str], Any] | None = None,
    ):
        if not is_loopback(host) and not token:
            raise ValueError(
                f"refusing to serve the control API on {host!r} without a token: anyone on the "
                "network could move the robot. Set serve.token (or ROBOT_RL_TOKEN) or bind "
                "to 127.0.0.1"
            )
        self.daemon, self.token = daemon, token
        self.load_policy = load_policy
        self.refused = 0
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="api")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that never ran
            self.httpd.shutdown()
        self.httpd.server_close()

    # ---------------------------------------------------------------- routing

    def authorised(self, header: str | None) -> bool:
        if not self.token:
            return True
        given = (header or "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def handle(self, method: str, path: str, body: dict) -> tuple[int, Any]:
        d = self.daemon
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "/status"): d.status,
            ("GET", "/metrics"): d.metrics.prometheus,
            ("POST", "/episode/start"): lambda: d.start_episode(_opt(body, "seed", int)),
            ("POST", "/episode/stop"): lambda: d.stop_episode(_opt(body, "success", bool)),
            ("POST", "/label"): lambda: d.label(_req(body, "success", bool)),
            ("POST", "/estop"): d.estop,
            ("POST", "/estop/clear"): d.clear_estop,
            ("POST", "/policy"): lambda: self._load(_req(body, "path", str)),
            ("POST", "/intervention"): lambda: d.set_intervention(
                _opt(body, "on", bool), _opt(body, "action", list)
            ),
        }
        if (method, path) not in routes:
            if any(p == path for _, p in routes):
                raise ApiError(405, f"{method} is not allowed on {path}")
            raise ApiError(404, f"no route {path}; routes: {sorted({p for _, p in routes})}")
        try:
            return 200, routes[(method, path)]()
        except DaemonError as err:
            raise ApiError(409, str(err)) from err
        except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
            raise ApiError(422, f"{type(err).__name__}: {err}") from err

    def _load(self, path: str) -> dict:
        if self.load_policy is None and not self.daemon.worker.by_path:
            raise ApiError(501, "this daemon was started without a policy loader")
        return self.daemon.load_policy(path, self.load_policy)


def _req(body: dict, key: str, kind: type) -> Any:
    if key not in body:
        raise ApiError(400, f"missing field {key!r} ({kind.__name__})")
    return _opt(body, key, kind)


def _opt(body: dict, key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ApiError(400, f"field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _handler(server: ControlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _serve(self, method: str) -> None:
            try:
                if not server.authorised(self.headers.get("Authorization")):
                    server.refused += 1
                    raise ApiError(
                        401, "missing or wrong token: send Authorization: Bearer <token>"
                    )
                status, result = server.handle(method, self.path.split("?")[0], self._body())
            except ApiError as err:
                status, result = err.status, {"error": str(err)}
            except Exception as err:  # noqa: BLE001 - a request must never take the daemon down
                log.exception("API request failed")
                status, result = 500, {"error": f"{type(err).__name__}: {err}"}
            if isinstance(result, str):
                self._send(status, result.encode(), "text/plain; version=0.0.4")
            else:
                data = json.dumps(result, default=_json_default).encode()
                self._send(status, data, "application/json")

        def _body(self) -> dict:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError as err:
                raise ApiError(400, "Content-Length is not a number") from err
            if length > MAX_BODY:
                raise ApiError(413, f"body of {length} bytes; at most {MAX_BODY}")
            if length <= 0:
                return {}
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ApiError(400, f"body is not valid JSON: {err}") from err
            if not isinstance(body, dict):
                raise ApiError(400, f"body must be a JSON object, got {type(body).__name__}")
            return body

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            if status >= 400:  # an unread body must not be taken for the next request
                self.close_connection = True
                self.send_header("Connection", "close")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("api: " + format, *args)

    return Handler


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
