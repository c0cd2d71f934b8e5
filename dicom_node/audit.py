"""The audit trail: one JSON object a line, appended to ``state_dir/audit.log``.

Events: ``association`` (accepted, rejected, released, aborted), ``instance_received``
(every C-STORE with its status), ``object_sent`` (every outbound C-STORE that succeeded)
and ``send_failed`` / ``send_dead_lettered``. Fields are UIDs, SOP classes, AE titles,
addresses, statuses -- never patient names or IDs (the same filter as the logs applies).

The file is opened for each line (O_APPEND), so logrotate can move it away without a
signal (``create`` mode; no ``copytruncate`` needed).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from .logs import _IDENTITY_FIELDS


class AuditLog:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields) -> None:
        if self.path is None:
            return
        now = time.time()
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                 "event": event}
        entry.update({k: v for k, v in fields.items() if k.lower() not in _IDENTITY_FIELDS})
        line = (json.dumps(entry, default=str) + "\n").encode()
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            except OSError:
                pass  # a full disk must not stop the node; the log says the same

    def events(self) -> list[dict]:
        """Every entry (for tests and `calcnode queue`)."""
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
