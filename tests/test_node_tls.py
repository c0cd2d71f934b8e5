"""DICOM TLS against DCMTK: the listener (echoscu/storescu +tls) and an outbound TLS destination
(storescp +tls), with certificates made by openssl for the test."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from conftest import ECHOSCU, STORESCU, free_port, need_tool
from dicom_factory import mg_dataset, write
from node_helpers import STORESCP, node_env, node_sections, state_db, wait_until, write_config

__all__ = ["node_env"]
OPENSSL = "/usr/bin/openssl"


def _openssl(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate; and a stranger's CA + cert."""
    need_tool(OPENSSL)
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=test {ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "other-ca")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.crt", cwd=d)
    return d


def _tls_flags(pki: Path, who: str = "client") -> list[str]:
    return ["+tls", str(pki / f"{who}.key"), str(pki / f"{who}.crt"), "+cf", str(pki / "ca.crt")]


def test_tls_listener_and_tls_destination(node_env, start_node, tmp_path, pki):
    need_tool(STORESCP)
    dest_port = free_port()
    dest_dir = tmp_path / "received"
    dest_dir.mkdir()
    dest = subprocess.Popen([STORESCP, "-aet", "DEST", "-od", str(dest_dir), *_tls_flags(pki, "server"),
                             str(dest_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tls = {"enabled": True, "certificate": str(pki / "server.crt"), "private_key": str(pki / "server.key"),
               "ca_certificates": str(pki / "ca.crt")}
        config = write_config(tmp_path / "node.toml", **node_sections(tls=tls), destinations=[
            {"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port, "tls": True}])
        node = start_node(state_dir=tmp_path / "node", config=config)

        def echo(*flags):
            return subprocess.run([ECHOSCU, *flags, "-aec", node.ae_title, "127.0.0.1", str(node.port)],
                                  capture_output=True, text=True, timeout=30)

        assert echo(*_tls_flags(pki)).returncode == 0
        assert echo().returncode != 0                                        # plain DICOM: refused
        assert echo("+tls", str(pki / "stranger.key"), str(pki / "stranger.crt"),
                    "+cf", str(pki / "ca.crt")).returncode != 0              # a certificate of another CA
        assert node.alive()

        image = write(mg_dataset(128, 96, seed=1), tmp_path / "mg.dcm")
        sent = subprocess.run([STORESCU, *_tls_flags(pki), "-aec", node.ae_title, "127.0.0.1", str(node.port),
                               str(image)], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert len(node.stored_files()) == 1

        def all_sent():
            db = state_db(node)
            try:
                sends = db.sends()
            finally:
                db.close()
            return sends if sends and all(s.state == "sent" for s in sends) else None

        sends = wait_until(all_sent, 60, "results sent over TLS", on_fail=node.log_text)
        received = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                          for p in dest_dir.iterdir())
        assert received == sorted(s.sop_instance_uid for s in sends)
    finally:
        dest.terminate()
        dest.wait(10)


def test_tls_configuration_errors_are_clear(tmp_path, pki):
    from dicom_node.config import ConfigError, load_config

    path = write_config(tmp_path / "c.toml", tls={"enabled": True, "certificate": str(pki / "server.crt")})
    with pytest.raises(ConfigError, match="tls.enabled needs tls.certificate and tls.private_key"):
        load_config(path)
    path = write_config(tmp_path / "d.toml", destinations=[
        {"name": "d", "ae_title": "D", "host": "127.0.0.1", "port": 104, "tls": True}])
    with pytest.raises(ConfigError, match="needs tls.ca_certificates"):
        load_config(path)
