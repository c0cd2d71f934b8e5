"""DICOM TLS (PS3.15 Annex B): SSL contexts for the listener and for outbound associations.

TLS 1.2 or later, Python's default (secure) cipher suites; certificates in PEM. The listener
verifies the peer's certificate against ``tls.ca_certificates`` (required with
``tls.require_client_certificate``); outbound, a ``tls = true`` destination's certificate is
verified against the same CA bundle and must name the destination's host (DNS name or IP address
in its subjectAltName); the node presents ``tls.certificate`` as its client certificate when set.
"""
from __future__ import annotations

import ssl

from .config import Config


def server_context(config: Config) -> ssl.SSLContext | None:
    tls = config.tls
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_certificates:
        ctx.load_verify_locations(tls.ca_certificates)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(config: Config) -> ssl.SSLContext:
    tls = config.tls
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_certificates or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.certificate and tls.private_key:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    return ctx
