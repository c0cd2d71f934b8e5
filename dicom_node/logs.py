"""Structured logging for the node.

``format = "json"`` writes one JSON object a line (time, level, logger, event
message and the event's fields), ready for journald or a log shipper;
``format = "text"`` writes the standard logging format with the fields appended.

Patient identity never reaches the log: events carry UIDs, SOP classes,
AE titles and sizes only. As a second line of defence, field names that could
hold identity (``PatientName``, ``PatientID`` ...) are dropped by the formatter.
"""
from __future__ import annotations

import json
import logging
import sys
import time

_IDENTITY_FIELDS = {"patientname", "patient_name", "patientid", "patient_id",
                    "patientbirthdate", "patient_birth_date", "otherpatientids"}


def _fields(record: logging.LogRecord) -> dict:
    fields = getattr(record, "fields", None) or {}
    return {k: v for k, v in fields.items() if k.lower() not in _IDENTITY_FIELDS}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def setup_logging(fmt: str = "json", level: str = "INFO", stream=None) -> None:
    """Route all calcnode logging to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs every PDU (and, at DEBUG, whole datasets with patient
    # names): never below INFO, and warnings only unless the operator asks for DEBUG.
    logging.getLogger("pynetdicom").setLevel("INFO" if level == "DEBUG" else "WARNING")
    # highdicom narrates every attribute copy at INFO: keep its warnings only, and never the ones
    # that quote a patient's name (a single-component name is common in real headers).
    highdicom = logging.getLogger("highdicom")
    highdicom.setLevel("INFO" if level == "DEBUG" else "WARNING")
    if not any(isinstance(f, NoPersonNames) for f in highdicom.filters):
        highdicom.addFilter(NoPersonNames())


class NoPersonNames(logging.Filter):
    """Drops highdicom's warnings about a person name: they quote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg).lower()
        return "patient_name" not in text and "person name" not in text and "_name\"" not in text


def event(logger: logging.Logger, level: int, message: str, **fields) -> None:
    """Log ``message`` with structured ``fields`` (UIDs, sizes, AE titles; never identity)."""
    logger.log(level, message, extra={"fields": fields})
