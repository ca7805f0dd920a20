"""The hvplug command, run in-process against the fake libvirt."""

import io
import json
import logging

import pytest

from hvplug.cli import main as cli


@pytest.fixture
def run(host, capsys, monkeypatch):
    """``run(*argv, stdin=None) -> (rc, stdout, stderr)``."""
    def invoke(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        rc = cli.main(["--config-file", "/dev/null", *argv])
        out, err = capsys.readouterr()
        return rc, out, err
    return invoke


@pytest.fixture(autouse=True)
def host_iqn(config_fixture, tmp_path, monkeypatch):
    """The CLI loads its own config; point it at a file with the unit IQN."""
    conf = tmp_path / "hvplug.conf"
    conf.write_text("[libvirt]\niscsi_initiator_name = iqn.1993-08.org.example:01:unit\n")
    real_main = cli.main
    monkeypatch.setattr(cli, "main", lambda argv: real_main(
        [a if a != "/dev/null" else str(conf) for a in argv]))


def test_attach_list_verify_detach(run, guest, make_info):
    info = make_info()
    rc, out, err = run("attach", "--domain", guest, "--connection-info", "-",
                       "--bus", "scsi", "--json", stdin=json.dumps(info))
    assert rc == 0, err
    result = json.loads(out)
    assert set(result) == {"domain", "dev", "bus", "driver", "secret_uuid", "portal",
                           "live", "persistent", "promoted"}
    assert (result["dev"], result["bus"]) == ("sda", "scsi")
    assert (result["live"], result["persistent"], result["promoted"]) == (True, False, False)

    rc, out, _ = run("list", "--domain", guest, "--json")
    (row,) = json.loads(out)["volumes"]
    assert row == {"dev": "sda", "bus": "scsi", "layer": "source", "protocol": "iscsi",
                   "source": f"{info['data']['target_iqn']}/1",
                   "portal": info["data"]["target_portal"],
                   "secret_uuid": result["secret_uuid"], "secret_usage": None}
    rc, out, _ = run("list", "--domain", guest)
    assert rc == 0 and "sda" in out and "secret_uuid" in out.splitlines()[0]

    rc, out, _ = run("verify", "--domain", guest, "--json")
    report = json.loads(out)
    assert rc == 0 and report["ok"] is True
    assert [c["check"] for c in report["disks"][0]["checks"]] == ["secret", "portal", "target",
                                                             "lun"]

    rc, out, _ = run("detach", "--domain", guest, "--dev", "sda", "--json")
    assert rc == 0 and json.loads(out)["dev"] == "sda"
    rc, out, _ = run("list", "--domain", guest)
    assert "has no network or block volumes" in out


def test_verify_fails_naming_the_check(run, host, guest, make_info):
    rc, out, _ = run("attach", "--domain", guest, "--connection-info", "-", "--bus", "scsi",
                     "--json", stdin=json.dumps(make_info()))
    host.delete_secret(json.loads(out)["secret_uuid"])
    rc, out, err = run("verify", "--domain", guest)
    assert rc == 1
    assert "is missing (see hvplug reconcile) [FAILED]" in out
    assert "verification of domain" in err and "is missing" in err


def test_render_json(run, make_info):
    rc, out, err = run("render", "--connection-info", "-", "--json", "--bus", "scsi",
                       stdin=json.dumps(make_info()))
    assert rc == 0, err
    rendered = json.loads(out)
    assert set(rendered) == {"driver", "disk_xml", "secret_xml"}
    assert rendered["driver"] == "hvplug.virt.volume.net.LibvirtNetVolumeDriver"
    assert "<secret" in rendered["secret_xml"] and "s3cret-pw" not in out
    rc, out, _ = run("render", "--connection-info", "-", "--json",
                     stdin=json.dumps(make_info(chap=False)))
    assert json.loads(out)["secret_xml"] is None


@pytest.mark.parametrize(("stdin", "rc", "words"), [
    ("{not json", 2, "malformed JSON"),
    ('{"driver_volume_type": "iscsi"}', 2, "data is missing"),
    ('{"driver_volume_type": "nfs", "data": {}}', 2, "No volume driver for"),
])
def test_bad_input_exit_2_without_traceback(run, guest, stdin, rc, words):
    code, out, err = run("attach", "--domain", guest, "--connection-info", "-", stdin=stdin)
    assert code == rc and words in err and "Traceback" not in err + out


def test_missing_file_and_domain(run, make_info, tmp_path):
    rc, _, err = run("render", "--connection-info", str(tmp_path / "nope.json"))
    assert rc == 2 and "cannot read --connection-info" in err
    rc, out, err = run("attach", "--domain", "ghost", "--connection-info", "-", "--json",
                       stdin=json.dumps(make_info()))
    assert rc == 1 and "domain missing" in err
    assert json.loads(out)["error"]["type"] == "DomainNotFound"


def test_wrong_chap_exit_1_names_authentication(run, host, guest, make_info, fake_libvirt):
    def login(*args):
        raise RuntimeError(fake_libvirt.ISCSI_AUTH_FAILURE)
    fake_libvirt.set_iscsi_login(login)
    rc, out, err = run("attach", "--domain", guest, "--connection-info", "-",
                       stdin=json.dumps(make_info(password="Wr0ng-pw")))
    assert rc == 1 and "authentication failed" in err.lower()
    assert "Wr0ng-pw" not in out + err and "Traceback" not in err
    assert host.call(lambda conn: conn.listAllSecrets()) == []


def test_usage_errors_exit_2(run):
    with pytest.raises(SystemExit) as exc:
        run("attach", "--connection-info", "-")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run("detach", "--domain", "d")
    assert exc.value.code == 2


def test_bad_config_file_exit_2(run, tmp_path, capsys):
    bad = tmp_path / "bad.conf"
    bad.write_text("[libvirt]\ndisk_bus = floppy\n")
    rc = cli.main(["--config-file", str(bad), "list", "--domain", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "LocationInfo" not in err
    assert "[libvirt] disk_bus: Valid values are [virtio, scsi, sata], but found 'floppy'" in err
    rc = cli.main(["--config-file", str(tmp_path / "absent.conf"), "list", "--domain", "x"])
    assert rc == 2


def test_bad_volume_drivers_entry_exit_2(run, tmp_path, capsys, make_info, monkeypatch):
    conf = tmp_path / "drivers.conf"
    conf.write_text("[libvirt]\nvolume_drivers = iscsi=no.such.Driver\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(make_info())))
    rc = cli.main(["--config-file", str(conf), "render", "--connection-info", "-"])
    err = capsys.readouterr().err
    assert rc == 2 and "'iscsi=no.such.Driver'" in err


def test_config_dirs_ignored_with_config_file(run, guest, tmp_path, monkeypatch, capsys):
    conf_d = tmp_path / "home" / ".hvplug" / "hvplug.conf.d"
    conf_d.mkdir(parents=True)
    (conf_d / "override.conf").write_text("[libvirt]\nconnection_uri = qemu:///nowhere\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rc, _out, err = run("list", "--domain", guest)
    assert rc == 0, err


def test_options_after_the_command(run, guest, make_info, fake_libvirt):
    rc, _out, err = run("list", "--domain", guest, "--connect", "qemu:///system", "--json")
    assert rc == 0, err


def test_debug_logs_never_show_the_password(run, guest, make_info, caplog):
    caplog.set_level(logging.DEBUG)
    rc, out, err = run("--debug", "attach", "--domain", guest, "--connection-info", "-",
                       "--bus", "scsi", stdin=json.dumps(make_info(password="Very-S3cret")))
    assert rc == 0
    assert "attaching" in caplog.text
    assert "Very-S3cret" not in caplog.text + out + err


def test_unexpected_error_is_one_line_unless_debug(run, guest, make_info, monkeypatch):
    def boom(*args, **kwargs):
        raise ValueError("kaboom with s3cret-pw inside")
    monkeypatch.setattr("hvplug.virt.attach.attach_volume", boom)
    rc, _out, err = run("attach", "--domain", guest, "--connection-info", "-",
                       stdin=json.dumps(make_info()))
    assert rc == 1 and "unexpected ValueError" in err and "--debug" in err
    assert "Traceback" not in err and "s3cret-pw" not in err


def test_untranslated_libvirt_error_is_one_clear_line(run, guest, monkeypatch, fake_libvirt):
    def broken(*args, **kwargs):
        raise fake_libvirt.libvirtError("internal error: disk is busy",
                                        fake_libvirt.VIR_ERR_INTERNAL_ERROR)
    monkeypatch.setattr("hvplug.virt.inspect.volume_rows", broken)
    rc, _out, err = run("list", "--domain", guest)
    assert rc == 1 and "libvirt failed to complete 'list': internal error: disk is busy" in err
    assert "Traceback" not in err
