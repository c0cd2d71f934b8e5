"""The web server of the local viewer: OHIF's built files, and Orthanc's DICOMweb on the same origin.

One loopback HTTP server does three things, each for a reason:

* serves OHIF's ``dist/`` folder, answering ``index.html`` for the single-page application's own
  routes (``/viewer?StudyInstanceUIDs=...`` is no file: OHIF's router reads it in the browser);
* serves ``/app-config.js`` from the recipe (deploy/viewer/app-config.js) instead of the one
  OHIF ships, which points at a public demonstration server;
* forwards ``/dicom-web/`` and ``/wado`` to Orthanc, so that the browser talks to one origin:
  Orthanc 1.10 sends no CORS headers, and a viewer on another port could not read its answers.
  The ``Host`` header goes through unchanged, so that the BulkDataURIs the DICOMweb plugin writes
  into the metadata point back at this server, not at Orthanc's own port.

Python's ``http.server`` is enough for one radiologist on one machine (the recipe is for viewing
results, not for a department); Orthanc's ServeFolders plugin cannot answer the application's
routes with ``index.html`` and serves under a prefix that OHIF's build does not expect.
"""
from __future__ import annotations

import http.client
import mimetypes
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROXIED_PREFIXES = ("/dicom-web/", "/dicom-web?", "/wado")
# Headers that belong to one hop of a connection (RFC 9110 §7.6.1): never forwarded.
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade"}
CHUNK = 1 << 16  # bytes copied at a time from Orthanc to the browser
TYPES = {".js": "application/javascript", ".mjs": "application/javascript", ".wasm": "application/wasm",
         ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml", ".woff2": "font/woff2",
         ".html": "text/html; charset=utf-8", ".png": "image/png", ".ico": "image/x-icon"}


class ViewerServer:
    """OHIF and a same-origin DICOMweb forward to Orthanc, on ``host:port`` (0: a free port).

    Parameters
    ----------
    dist : Path
        OHIF's built distribution (the ``dist/`` folder of the npm package ``@ohif/app``).
    app_config : Path
        The OHIF configuration served as ``/app-config.js``.
    orthanc_port : int
        Orthanc's HTTP port on 127.0.0.1.
    """

    def __init__(self, dist: Path, app_config: Path, orthanc_port: int, host: str = "127.0.0.1", port: int = 0):
        self.dist = Path(dist).resolve()
        if not (self.dist / "index.html").is_file():
            raise FileNotFoundError(f"{self.dist} holds no OHIF build (index.html); `make ohif` fetches it")
        self.app_config = Path(app_config).read_bytes()
        self.orthanc_port = orthanc_port
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="viewer-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def study_url(self, study_instance_uid: str) -> str:
        """OHIF's viewer on one study (its default mode, which shows SEG and SR objects)."""
        return f"{self.url}/viewer?StudyInstanceUIDs={urllib.parse.quote(study_instance_uid)}"

    def start(self) -> "ViewerServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def static_file(self, url_path: str) -> Path:
        """The file of ``dist`` a URL path names; ``index.html`` for the application's routes."""
        relative = urllib.parse.unquote(url_path.split("?", 1)[0]).lstrip("/")
        path = (self.dist / relative).resolve()
        if path.is_relative_to(self.dist) and path.is_file():
            return path
        return self.dist / "index.html"


def _handler(server: ViewerServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - http.server's signature
            pass  # OHIF makes hundreds of requests per study: no line each on the terminal

        def do_GET(self):
            self._answer()

        def do_HEAD(self):
            self._answer()

        def do_POST(self):
            self._answer()

        def _answer(self):
            if self.path.startswith(PROXIED_PREFIXES):
                self._forward()
            elif self.path.split("?", 1)[0] == "/app-config.js":
                self._send(200, TYPES[".js"], server.app_config)
            elif self.command == "POST":
                self._send(405, "text/plain", b"method not allowed\n")
            else:
                path = server.static_file(self.path)
                kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self._send(200, kind, path.read_bytes())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            upstream = http.client.HTTPConnection("127.0.0.1", server.orthanc_port, timeout=300)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                # Orthanc may answer chunked: the browser gets a plain body with its length, or
                # chunks of our own when the length is unknown.
                size = answer.getheader("Content-Length")
                if size is not None:
                    self.send_header("Content-Length", size)
                    self.end_headers()
                    if self.command != "HEAD":
                        shutil.copyfileobj(answer, self.wfile, CHUNK)
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while chunk := answer.read(CHUNK):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
            except (OSError, http.client.HTTPException) as exc:
                self._send(502, "text/plain", f"Orthanc did not answer: {exc}\n".encode())
            finally:
                upstream.close()

    return Handler
