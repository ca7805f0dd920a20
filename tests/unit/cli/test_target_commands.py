"""``hvplug target ...`` in-process, with a fake helper standing in for tgtd."""

import json
import os

import pytest

from hvplug.cli import main as cli
from hvplug.cli.target_commands import parse_size
from hvplug.target import registry
from tests.unit.target import fakehelper


@pytest.fixture
def run(tmp_path, capsys, monkeypatch):
    fakehelper.DAEMON.clear()
    for name in ("tgtadm", "iseradm", "lioadm"):
        monkeypatch.setitem(registry.HELPER_CLASSES, name,
                            "tests.unit.target.fakehelper.FakeHelper")
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[target]\nexports_dir = {tmp_path}/exports\n"
                    f"volumes_dir = {tmp_path}/volumes\n")

    def invoke(*argv):
        rc = cli.main(["--config-file", str(conf), "target", *argv])
        out, err = capsys.readouterr()
        return rc, out, err
    yield invoke
    fakehelper.DAEMON.clear()


@pytest.mark.parametrize("text, size", [("512M", 512 << 20), ("10G", 10 << 30),
                                        ("1T", 1 << 40), ("4096", 4096), ("2GiB", 2 << 30)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "10X", "-1G", "1.5G", "G"])
def test_parse_size_rejects(text):
    with pytest.raises(Exception) as err:
        parse_size(text)
    assert getattr(err.value, "exit_code", None) == 2


def test_create_export_makes_a_sparse_file_and_prints_connection_info(run, tmp_path):
    path = tmp_path / "vol.img"
    rc, out, err = run("create-export", "--volume-id", "v1", "--path", str(path),
                       "--size", "64M")
    assert rc == 0, err
    info = json.loads(out)
    assert info["driver_volume_type"] == "iscsi" and info["serial"] == "v1"
    assert info["data"]["target_iqn"].endswith(":volume-v1")
    assert info["data"]["auth_password"]  # the hand-off hvplug attach consumes
    assert path.stat().st_size == 64 << 20 and path.stat().st_blocks == 0
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_create_export_needs_an_existing_path_or_size(run, tmp_path):
    rc, _out, err = run("create-export", "--volume-id", "v1", "--path", str(tmp_path / "x"))
    assert rc == 2 and "give --size" in err


def test_list_show_remove(run, tmp_path):
    path = tmp_path / "vol.img"
    _, out, _ = run("create-export", "--volume-id", "v1", "--path", str(path), "--size", "1M")
    password = json.loads(out)["data"]["auth_password"]

    rc, out, _ = run("list", "--json")
    (row,) = json.loads(out)["exports"]
    assert row["volume_id"] == "v1" and row["helper"] == "tgtadm" and row["tid"] == 1
    rc, out, _ = run("list")
    assert "v1" in out and password not in out

    rc, out, _ = run("show", "--volume-id", "v1", "--json")
    shown = json.loads(out)
    assert shown["auth_password"] == "***" and password not in out
    rc, out, _ = run("show", "--volume-id", "v1")
    assert "auth_password: ***" in out and password not in out
    rc, out, _ = run("show", "--volume-id", "v1", "--json", "--show-secrets")
    assert json.loads(out)["auth_password"] == password

    rc, out, _ = run("remove-export", "--volume-id", "v1", "--json")
    assert rc == 0 and json.loads(out) == {"volume_id": "v1", "removed": True}
    rc, _out, err = run("show", "--volume-id", "v1")
    assert rc == 1 and "No export of volume v1" in err
    rc, _out, err = run("remove-export", "--volume-id", "v1")
    assert rc == 1 and "No export of volume v1" in err


def test_ensure_exports_after_a_daemon_restart(run, tmp_path):
    for vid in ("a", "b"):
        run("create-export", "--volume-id", vid, "--path", str(tmp_path / vid), "--size", "1M")
    fakehelper.DAEMON.clear()
    rc, out, _ = run("ensure-exports", "--json")
    assert rc == 0
    assert sorted(r["volume_id"] for r in json.loads(out)["exports"]) == ["a", "b"]
    assert len(fakehelper.DAEMON) == 2


def test_bad_volume_id_and_helper(run, tmp_path):
    rc, _out, err = run("create-export", "--volume-id", "../x", "--path", str(tmp_path / "f"),
                        "--size", "1M")
    assert rc == 2 and "volume id" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        run("create-export", "--volume-id", "v", "--path", "/x", "--helper", "scst")
    assert exc.value.code == 2


def test_records_are_root_only(run, tmp_path):
    run("create-export", "--volume-id", "v1", "--path", str(tmp_path / "f"), "--size", "1M")
    assert oct(os.stat(tmp_path / "exports").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "exports" / "v1.json").st_mode & 0o777) == "0o600"
