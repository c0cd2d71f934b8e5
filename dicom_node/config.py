"""Node configuration: one TOML file over embedded defaults.

The defaults live in ``default_config.toml`` next to this module (shipped in the
wheel, documented there key by key). A user file only needs the keys it changes;
an unknown section or key is an error, so a typo never silently falls back to a
default. Command-line flags override the file.
"""
from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and key."""


# What an MG image without ROI gets (analysis.study.NO_ROI_POLICIES, checked equal by the tests; the
# node's config layer does not import the analysis): "detect" (default) finds calcification
# clusters and analyses each, "skip" leaves the image (and a study without any ROI object) out,
# "whole_breast" analyses the whole breast as one region (research only).
NO_ROI_POLICIES = ("detect", "skip", "whole_breast")
WORKER_BACKENDS = ("local", "dask")


@dataclass(frozen=True)
class NodeSettings:
    ae_title: str
    host: str
    port: int
    state_dir: Path
    allowed_calling_ae_titles: tuple[str, ...]
    max_associations: int
    network_timeout_s: float
    max_pdu_bytes: int
    check_called_ae_title: bool = False

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"


@dataclass(frozen=True)
class LoggingSettings:
    format: str
    level: str


@dataclass(frozen=True)
class AnalysisSettings:
    default_pixel_spacing_mm: float
    point_roi_radius_mm: float
    segmentation_model: str
    model_bundle: str
    write_gsps: bool
    engine: str


@dataclass(frozen=True)
class AssemblySettings:
    stable_seconds: float
    no_roi_policy: str
    # seconds after the release of the association that brought a study's last instance before
    # the study is analysed (dicom_node/assembly.py); stable_seconds stays the fallback
    association_grace_seconds: float = 2.0


@dataclass(frozen=True)
class WorkerSettings:
    count: int
    max_attempts: int
    stop_timeout_s: float
    backend: str = "local"       # "local": `count` worker processes; "dask": the scheduler below
    dask_scheduler: str = ""     # e.g. "tcp://10.1.2.3:8786" (backend = "dask")
    warm_up: bool = True         # analyse a small simulated study at start (dicom_node/warmup.py)


@dataclass(frozen=True)
class OutboundSettings:
    calling_ae_title: str
    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    timeout_s: float


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool
    host: str
    port: int


@dataclass(frozen=True)
class AuditSettings:
    path: str


@dataclass(frozen=True)
class StorageSettings:
    min_free_mb: int
    retention_days: float


@dataclass(frozen=True)
class TlsSettings:
    enabled: bool
    certificate: str
    private_key: str
    ca_certificates: str
    require_client_certificate: bool


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True)
class Config:
    node: NodeSettings
    logging: LoggingSettings
    analysis: AnalysisSettings
    assembly: AssemblySettings
    workers: WorkerSettings
    outbound: OutboundSettings
    http: HttpSettings
    audit: AuditSettings
    storage: StorageSettings
    tls: TlsSettings
    destinations: tuple[Destination, ...] = ()
    source: str = field(default="embedded defaults")

    @property
    def state_db(self) -> Path:
        return self.node.state_dir / "state.db"

    @property
    def results_dir(self) -> Path:
        return self.node.state_dir / "results"

    @property
    def audit_path(self) -> Path | None:
        if not self.audit.path:
            return None
        return self.node.state_dir / self.audit.path

    @property
    def calling_ae_title(self) -> str:
        return self.outbound.calling_ae_title or self.node.ae_title


SECTIONS = {"node": NodeSettings, "logging": LoggingSettings, "assembly": AssemblySettings,
            "workers": WorkerSettings, "analysis": AnalysisSettings, "outbound": OutboundSettings,
            "http": HttpSettings, "audit": AuditSettings, "storage": StorageSettings, "tls": TlsSettings}
LISTS = {"destinations": Destination}


def default_config_text() -> str:
    return resources.files("dicom_node").joinpath("default_config.toml").read_text("utf-8")


def _check_value(where: str, what: str, value, expected: type):
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
        raise ConfigError(f"{where}: {what} must be {expected.__name__}, got {value!r}")
    return value


def _merge_list(name: str, items, where: str) -> list[dict]:
    kind = LISTS[name]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{where}: {name} must be a list of tables ([[{name}]])")
    types = {f.name: f.type for f in fields(kind)}
    defaults = {f.name: f.default for f in fields(kind) if f.default is not MISSING}
    out = []
    for index, item in enumerate(items, start=1):
        for key in item:
            if key not in types:
                raise ConfigError(f"{where}: unknown key {name}[{index}].{key} "
                                  f"(known: {', '.join(types)})")
        missing = [key for key in types if key not in item and key not in defaults]
        if missing:
            raise ConfigError(f"{where}: {name}[{index}] needs {', '.join(missing)}")
        out.append({key: _check_value(where, f"{name}[{index}].{key}", item.get(key, defaults.get(key)),
                                      {"str": str, "int": int, "bool": bool}[types[key]])
                    for key in types})
    return out


def _merge(defaults: dict, user: dict, where: str) -> dict:
    merged = {section: (list(values) if isinstance(values, list) else dict(values))
              for section, values in defaults.items()}
    for section, values in user.items():
        if section not in defaults:
            raise ConfigError(f"{where}: unknown section [{section}] "
                              f"(known: {', '.join(sorted(defaults))})")
        if section in LISTS:
            merged[section] = _merge_list(section, values, where)
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key, value in values.items():
            if key not in defaults[section]:
                raise ConfigError(f"{where}: unknown key {section}.{key} "
                                  f"(known: {', '.join(sorted(defaults[section]))})")
            expected = type(defaults[section][key])
            merged[section][key] = _check_value(where, f"{section}.{key}", value, expected)
    return merged


def _validate_ae_title(value: str, what: str) -> str:
    if not 1 <= len(value.strip()) <= 16 or "\\" in value or not value.isprintable():
        raise ConfigError(f"{what} {value!r} is not a valid AE title (1-16 printable characters, "
                          "no backslash)")
    return value.strip()


def _build(values: dict, source: str) -> Config:
    node = dict(values["node"])
    node["ae_title"] = _validate_ae_title(node["ae_title"], "node.ae_title")
    node["allowed_calling_ae_titles"] = tuple(
        _validate_ae_title(str(t), "node.allowed_calling_ae_titles entry")
        for t in node["allowed_calling_ae_titles"])
    try:
        ipaddress.ip_address(node["host"])
    except ValueError:
        if node["host"] != "localhost":
            raise ConfigError(f"node.host {node['host']!r} is not an IP address") from None
    if not 0 < node["port"] < 65536:
        raise ConfigError(f"node.port {node['port']} is outside 1..65535")
    if node["max_associations"] < 1:
        raise ConfigError("node.max_associations must be at least 1")
    if node["network_timeout_s"] <= 0:
        raise ConfigError("node.network_timeout_s must be positive")
    if node["max_pdu_bytes"] < 0:
        raise ConfigError("node.max_pdu_bytes must be 0 (unlimited) or positive")
    node["state_dir"] = Path(node["state_dir"])
    node["network_timeout_s"] = float(node["network_timeout_s"])

    logging_ = dict(values["logging"])
    if logging_["format"] not in ("json", "text"):
        raise ConfigError(f"logging.format must be \"json\" or \"text\", got {logging_['format']!r}")
    logging_["level"] = logging_["level"].upper()
    if logging_["level"] not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"logging.level {logging_['level']!r} is not DEBUG, INFO, WARNING or ERROR")

    audit_ = dict(values["audit"])
    analysis = dict(values["analysis"])
    if analysis["default_pixel_spacing_mm"] < 0 or analysis["default_pixel_spacing_mm"] > 1:
        raise ConfigError("analysis.default_pixel_spacing_mm must be in 0..1 mm (0 = none)")
    if not 0 < analysis["point_roi_radius_mm"] <= 50:
        raise ConfigError("analysis.point_roi_radius_mm must be in (0, 50] mm")
    if analysis["engine"] and ":" not in analysis["engine"]:
        raise ConfigError(f"analysis.engine {analysis['engine']!r} must be \"\" or \"module:callable\"")

    assembly = dict(values["assembly"])
    if assembly["stable_seconds"] < 0:
        raise ConfigError("assembly.stable_seconds must be >= 0")
    if not 0 <= assembly["association_grace_seconds"] <= 3600:
        raise ConfigError("assembly.association_grace_seconds must be in 0..3600 s (a value >= stable_seconds "
                          "leaves only stable_seconds)")
    if assembly["no_roi_policy"] not in NO_ROI_POLICIES:
        raise ConfigError(f"assembly.no_roi_policy must be one of {', '.join(NO_ROI_POLICIES)}, "
                          f"got {assembly['no_roi_policy']!r}")

    workers = dict(values["workers"])
    if not 0 <= workers["count"] <= 64:
        raise ConfigError("workers.count must be in 0..64 (0 = receive only, analyse nothing)")
    if workers["max_attempts"] < 1:
        raise ConfigError("workers.max_attempts must be at least 1")
    if workers["stop_timeout_s"] < 0:
        raise ConfigError("workers.stop_timeout_s must be >= 0")
    if workers["backend"] not in WORKER_BACKENDS:
        raise ConfigError(f"workers.backend must be one of {', '.join(WORKER_BACKENDS)}, got {workers['backend']!r}")
    workers["dask_scheduler"] = workers["dask_scheduler"].strip()
    if workers["backend"] == "dask" and not workers["dask_scheduler"]:
        raise ConfigError("workers.backend = \"dask\" needs workers.dask_scheduler (e.g. \"tcp://10.1.2.3:8786\")")

    outbound = dict(values["outbound"])
    if outbound["calling_ae_title"]:
        outbound["calling_ae_title"] = _validate_ae_title(outbound["calling_ae_title"],
                                                          "outbound.calling_ae_title")
    if outbound["max_attempts"] < 1:
        raise ConfigError("outbound.max_attempts must be at least 1")
    if outbound["backoff_initial_s"] < 0 or outbound["backoff_max_s"] < outbound["backoff_initial_s"]:
        raise ConfigError("outbound.backoff_initial_s must be >= 0 and <= outbound.backoff_max_s")
    if outbound["timeout_s"] <= 0:
        raise ConfigError("outbound.timeout_s must be positive")

    http = dict(values["http"])
    try:
        ipaddress.ip_address(http["host"])
    except ValueError:
        if http["host"] != "localhost":
            raise ConfigError(f"http.host {http['host']!r} is not an IP address") from None
    if not 0 <= http["port"] < 65536:
        raise ConfigError(f"http.port {http['port']} is outside 0..65535")

    storage = dict(values["storage"])
    if storage["min_free_mb"] < 0 or storage["retention_days"] < 0:
        raise ConfigError("storage.min_free_mb and storage.retention_days must be >= 0")

    tls = dict(values["tls"])
    if tls["enabled"] or any(d.get("tls") for d in values["destinations"]):
        for key in ("certificate", "private_key", "ca_certificates"):
            if tls[key] and not Path(tls[key]).is_file():
                raise ConfigError(f"tls.{key} {tls[key]!r}: no such file")
        if tls["enabled"] and not (tls["certificate"] and tls["private_key"]):
            raise ConfigError("tls.enabled needs tls.certificate and tls.private_key (PEM files)")
        if tls["require_client_certificate"] and tls["enabled"] and not tls["ca_certificates"]:
            raise ConfigError("tls.require_client_certificate needs tls.ca_certificates (to verify them)")
        if any(d.get("tls") for d in values["destinations"]) and not tls["ca_certificates"]:
            raise ConfigError("a destination with tls = true needs tls.ca_certificates (to verify it)")

    destinations = []
    names = set()
    for index, item in enumerate(values["destinations"], start=1):
        d = dict(item)
        d["name"] = d["name"].strip()
        if not d["name"] or d["name"] in names:
            raise ConfigError(f"destinations[{index}].name {d['name']!r} is empty or used twice")
        names.add(d["name"])
        d["ae_title"] = _validate_ae_title(d["ae_title"], f"destinations[{index}].ae_title")
        if not d["host"].strip():
            raise ConfigError(f"destinations[{index}].host is empty")
        if not 0 < d["port"] < 65536:
            raise ConfigError(f"destinations[{index}].port {d['port']} is outside 1..65535")
        destinations.append(Destination(**d))

    return Config(node=NodeSettings(**node), logging=LoggingSettings(**logging_),
                  analysis=AnalysisSettings(**analysis), assembly=AssemblySettings(**assembly),
                  workers=WorkerSettings(**workers), outbound=OutboundSettings(**outbound),
                  http=HttpSettings(**http), audit=AuditSettings(**audit_),
                  storage=StorageSettings(**storage), tls=TlsSettings(**tls), destinations=tuple(destinations),
                  source=source)


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read the embedded defaults, then ``path`` (if given), then ``overrides``.

    ``overrides`` is {section: {key: value}} with None values ignored (unset flags).
    Raises :class:`ConfigError` with the file and key for anything invalid.
    """
    defaults = tomllib.loads(default_config_text())
    values = defaults
    source = "embedded defaults"
    if path is not None:
        path = Path(path)
        try:
            user = tomllib.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        values = _merge(defaults, user, str(path))
        source = str(path)
    if overrides:
        cleaned = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
        values = _merge(values, cleaned, "command line")
    try:
        return _build(values, source)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{source}: {exc}") from None


def describe(config: Config) -> dict:
    """The effective configuration as plain data (for check-config and the start-up log)."""
    out: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        section = getattr(config, name)
        out[name] = {}
        for f in fields(section):
            value = getattr(section, f.name)
            out[name][f.name] = str(value) if isinstance(value, Path) else (
                list(value) if isinstance(value, tuple) else value)
    out["destinations"] = [{f.name: getattr(d, f.name) for f in fields(d)}
                           for d in config.destinations]
    return out
