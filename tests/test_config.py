"""Configuration: embedded defaults, a TOML file over them, flags over both, clear errors."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import CALCNODE, ROOT
from dicom_node.config import ConfigError, describe, load_config


def test_embedded_defaults():
    config = load_config()
    assert (config.node.ae_title, config.node.host, config.node.port) == ("CALCNODE", "127.0.0.1", 11112)
    assert config.node.state_dir == Path("var")
    assert config.node.spool_dir == Path("var/spool")
    assert config.node.allowed_calling_ae_titles == ()
    assert config.logging.format == "json"


def test_file_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[node]\nport = 4104\nae_title = "MAMMOAI"\n[logging]\nformat = "text"\n')
    config = load_config(path, overrides={"node": {"port": 5105, "ae_title": None}})
    assert config.node.port == 5105            # flag wins
    assert config.node.ae_title == "MAMMOAI"   # unset flag leaves the file's value
    assert config.logging.format == "text"
    assert config.node.host == "127.0.0.1"     # default where neither says


@pytest.mark.parametrize("text, message", [
    ('[node]\nprot = 1\n', "unknown key node.prot"),
    ('[nodes]\nport = 1\n', "unknown section [nodes]"),
    ('[node]\nport = "eleven"\n', "node.port must be int"),
    ('[node]\nport = 70000\n', "outside 1..65535"),
    ('[node]\nae_title = "A_TITLE_THAT_IS_TOO_LONG"\n', "not a valid AE title"),
    ('[node]\nhost = "my pacs"\n', "not an IP address"),
    ('[logging]\nformat = "xml"\n', "logging.format"),
    ('[node\nport = 1\n', "not valid TOML"),
])
def test_invalid_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_check_config_command(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[node]\nallowed_calling_ae_titles = ["PACS1", "PACS2"]\n')
    ok = subprocess.run(CALCNODE + ["check-config", "--config", str(good), "--port", "2000"],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    effective = json.loads(ok.stdout)["config"]
    assert effective["node"]["allowed_calling_ae_titles"] == ["PACS1", "PACS2"]
    assert effective["node"]["port"] == 2000

    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nport = 0\n')
    fail = subprocess.run(CALCNODE + ["check-config", "--config", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)
    assert fail.returncode == 1
    assert "node.port 0 is outside 1..65535" in fail.stderr
    assert "Traceback" not in fail.stderr


def test_documented_defaults_file_is_valid(tmp_path):
    printed = subprocess.run(CALCNODE + ["check-config", "--print-defaults"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    copy = tmp_path / "copy.toml"
    copy.write_text(printed)
    assert describe(load_config(copy)) == describe(load_config())
