"""Node configuration: one TOML file over embedded defaults.

The defaults live in ``default_config.toml`` next to this module (shipped in the
wheel, documented there key by key). A user file only needs the keys it changes;
an unknown section or key is an error, so a typo never silently falls back to a
default. Command-line flags override the file.
"""
from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and key."""


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


@dataclass(frozen=True)
class Config:
    node: NodeSettings
    logging: LoggingSettings
    analysis: AnalysisSettings
    source: str = field(default="embedded defaults")


SECTIONS = {"node": NodeSettings, "logging": LoggingSettings, "analysis": AnalysisSettings}


def default_config_text() -> str:
    return resources.files("dicom_node").joinpath("default_config.toml").read_text("utf-8")


def _merge(defaults: dict, user: dict, where: str) -> dict:
    merged = {section: dict(values) for section, values in defaults.items()}
    for section, values in user.items():
        if section not in defaults:
            raise ConfigError(f"{where}: unknown section [{section}] "
                              f"(known: {', '.join(sorted(defaults))})")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key, value in values.items():
            if key not in defaults[section]:
                raise ConfigError(f"{where}: unknown key {section}.{key} "
                                  f"(known: {', '.join(sorted(defaults[section]))})")
            expected = type(defaults[section][key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise ConfigError(f"{where}: {section}.{key} must be {expected.__name__}, "
                                  f"got {value!r}")
            merged[section][key] = value
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

    analysis = dict(values["analysis"])
    if analysis["default_pixel_spacing_mm"] < 0 or analysis["default_pixel_spacing_mm"] > 1:
        raise ConfigError("analysis.default_pixel_spacing_mm must be in 0..1 mm (0 = none)")
    if not 0 < analysis["point_roi_radius_mm"] <= 50:
        raise ConfigError("analysis.point_roi_radius_mm must be in (0, 50] mm")
    return Config(node=NodeSettings(**node), logging=LoggingSettings(**logging_),
                  analysis=AnalysisSettings(**analysis), source=source)


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
    return out
