"""``hvplug target ...`` in-process, with a fake helper standing in for tgtd."""

import json
import os

import pytest

from hvplug import exception
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
                    f"volumes_dir = {tmp_path}/volumes\nbacking_roots = {tmp_path}\n")

    def invoke(*argv):
        rc = cli.main(["--config-file", str(conf), "target", *argv])
        out, err = capsys.readouterr()
        return rc, out, err
    yield invoke
    fakehelper.DAEMON.clear()


@pytest.mark.parametrize(("text", "size"), [("512M", 512 << 20), ("10G", 10 << 30),
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
    assert rc == 2 and "give --size" in err and not (tmp_path / "x").exists()


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


# -- item 5: the target side never loses an export -----------------------------------

def files(tmp_path) -> set[str]:
    """Every file under tmp_path except the config, the records and the stanzas."""
    skip = {"hvplug.conf"}
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
            if p.is_file() and p.name not in skip
            and p.relative_to(tmp_path).parts[0] not in ("exports", "volumes")}


def test_case_twins_are_refused_and_the_first_export_keeps_its_file(run, tmp_path):
    rc, out, _ = run("create-export", "--volume-id", "Coll1", "--path",
                     str(tmp_path / "a.img"), "--size", "1M")
    assert rc == 0
    iqn = json.loads(out)["data"]["target_iqn"]
    rc, out, err = run("create-export", "--volume-id", "coll1", "--path",
                       str(tmp_path / "b.img"), "--size", "1M")
    assert rc == 2 and out == ""
    assert "'coll1' differs only in case from the recorded export 'Coll1'" in err
    assert f"{tmp_path}/exports/Coll1.json" in err and "Traceback" not in err
    assert not (tmp_path / "b.img").exists()  # refused before the file was made
    assert fakehelper.DAEMON[iqn]["path"] == str(tmp_path / "a.img")
    rc, _out, err = run("remove-export", "--volume-id", "coll1")
    assert rc == 1 and "No export of volume coll1" in err
    assert iqn in fakehelper.DAEMON  # Coll1's target was not touched
    rc, out, _ = run("create-export", "--volume-id", "Coll1", "--path",
                     str(tmp_path / "a.img"))
    assert rc == 0 and json.loads(out)["data"]["target_iqn"] == iqn  # idempotent


def test_an_iqn_serving_another_file_is_refused_not_replaced(run, tmp_path):
    run("create-export", "--volume-id", "v1", "--path", str(tmp_path / "a.img"),
        "--size", "1M")
    rc, out, err = run("create-export", "--volume-id", "v1", "--path",
                       str(tmp_path / "b.img"), "--size", "1M")
    assert rc == 2 and out == ""
    assert f"already serves '{tmp_path}/a.img'" in err
    assert "hvplug target remove-export --volume-id v1" in err
    assert not (tmp_path / "b.img").exists()
    (only,) = fakehelper.DAEMON.values()
    assert only["path"] == str(tmp_path / "a.img")


def test_a_rerun_with_the_same_id_and_path_is_idempotent(run, tmp_path):
    argv = ("create-export", "--volume-id", "v1", "--path", str(tmp_path / "a.img"),
            "--size", "1M")
    rc, first, _ = run(*argv)
    rc2, again, _err = run(*argv)
    assert rc == rc2 == 0 and json.loads(first) == json.loads(again)
    assert len(fakehelper.DAEMON) == 1


CORRUPT = {
    "truncated": '{"volume_id": "bad", "path": "/x',
    "invalid": "not json at all",
    "a-list": "[1, 2]",
    "missing-keys": '{"volume_id": "missing-keys"}',
    "wrong-types": None,  # a good record with lun and portals of the wrong type
    "empty-portals": None,
}


def plant(tmp_path, name):
    """A record of export ``name`` made corrupt the way its name says."""
    path = tmp_path / "exports" / f"{name}.json"
    if CORRUPT[name] is not None:
        path.write_text(CORRUPT[name])
        return path
    data = json.loads(path.read_text())
    if name == "wrong-types":
        data.update(lun="one", portals="127.0.0.1:3260")
    else:
        data["portals"] = []
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_record_is_named_skipped_and_exits_1(run, tmp_path, kind):
    for vid in ("good1", kind, "good2"):
        rc, _, err = run("create-export", "--volume-id", vid, "--path",
                         str(tmp_path / f"{vid}.img"), "--size", "1M")
        assert rc == 0, err
    bad = plant(tmp_path, kind)

    rc, out, err = run("list", "--json")
    assert rc == 1
    assert [r["volume_id"] for r in json.loads(out)["exports"]] == ["good1", "good2"]
    assert f"Export record '{bad}' is unreadable" in err and "Traceback" not in err
    assert "1 of 3 export records could not be listed" in err
    rc, out, err = run("list")
    assert rc == 1 and "good1" in out and "good2" in out and str(bad) in err

    rc, out, _ = run("show", "--volume-id", "good2", "--json")
    assert rc == 0 and json.loads(out)["volume_id"] == "good2"
    rc, _, err = run("show", "--volume-id", kind)
    assert rc == 1 and str(bad) in err and "unexpected" not in err

    fakehelper.DAEMON.clear()  # the daemon restarted
    rc, out, err = run("ensure-exports", "--json")
    assert rc == 1 and str(bad) in err
    assert sorted(r["volume_id"] for r in json.loads(out)["exports"]) == ["good1", "good2"]
    assert "1 of 3 export records could not be restored" in err
    assert len(fakehelper.DAEMON) == 2

    rc, _, err = run("remove-export", "--volume-id", "good1")
    assert rc == 0, err
    rc, _, err = run("remove-export", "--volume-id", kind)
    assert rc == 1 and str(bad) in err and "unexpected" not in err
    assert bad.exists()  # hvplug cannot tell what it describes: left for the operator
    bad.unlink()
    assert run("list")[0] == 0


def test_ensure_exports_reports_a_failed_restore_and_restores_the_rest(run, tmp_path):
    for vid in ("a", "b", "c"):
        run("create-export", "--volume-id", vid, "--path", str(tmp_path / f"{vid}.img"),
            "--size", "1M")
    fakehelper.DAEMON.clear()
    (tmp_path / "b.img").unlink()
    rc, out, err = run("ensure-exports")
    assert rc == 1
    assert "a: " in out and "c: " in out and "b: " not in out
    assert "volume b (iqn.2010-10.org.openstack:volume-b)" in err and "does not exist" in err
    assert len(fakehelper.DAEMON) == 2


# Every rejected create leaves no file ----------------------------------------------

@pytest.mark.parametrize(("extra", "code", "fragment"), [
    # a newline is refused, shown escaped (by the CLI's one-line check, or by ours)
    (("--volume-id", "vol\n"), 2, "\\n'"),
    (("--volume-id", "../x"), 2, "volume id '../x'"),
    (("--initiator", "not-an-iqn"), 2, "initiator 'not-an-iqn' is not an iSCSI name"),
    (("--initiator", "iqn.2024-01.x:y\n"), 2, "\\n'"),
    (("--size", "0"), 2, "is not a size"),
    (("--size", "9" * 40), 2, "is not a size"),
    (("--size", "9" * 25), 2, "more than any file can hold"),
    (("--size", "8388608T"), 2, "more than any file can hold"),
    (("--size", "1M\n1M"), 2, "\\n"),
    (("--helper", "ietadm"), 2, "enable_iser"),
])
def test_rejected_creates_leave_no_file(run, tmp_path, extra, code, fragment):
    conf = tmp_path / "hvplug.conf"
    if "--helper" in extra:
        conf.write_text(conf.read_text() + "enable_iser = true\n")
    args = {"--volume-id": "v1", "--path": str(tmp_path / "new.img"), "--size": "64M"}
    args.update(zip(extra[::2], extra[1::2], strict=False))
    rc, out, err = run("create-export", *[x for kv in args.items() for x in kv])
    assert rc == code and out == "", err
    assert fragment in err and "unexpected" not in err and "Traceback" not in err
    assert files(tmp_path) == set() and fakehelper.DAEMON == {}
    assert not (tmp_path / "exports").exists() or not list((tmp_path / "exports").iterdir())


def test_a_path_in_a_missing_directory_is_bad_input(run, tmp_path):
    rc, _, err = run("create-export", "--volume-id", "v1", "--path",
                     str(tmp_path / "nodir" / "v.img"), "--size", "1M")
    assert rc == 2 and f"its directory '{tmp_path}/nodir' does not exist" in err
    assert "mkdir -p" in err and not (tmp_path / "nodir").exists()


def test_a_size_too_big_for_the_filesystem_is_bad_input_and_leaves_no_file(run, tmp_path):
    path = tmp_path / "huge.img"
    try:  # what the filesystem under tmp_path allows (ext4: up to 16 TiB)
        with open(path, "wb") as f:
            f.truncate(17 << 40)
    except OSError:
        path.unlink()
    else:
        path.unlink()
        pytest.skip("this filesystem holds 17 TiB files")
    rc, out, err = run("create-export", "--volume-id", "v1", "--path", str(path),
                       "--size", "17T")
    assert rc == 2 and out == ""
    assert "--size '17T' (18691697672192 bytes) is more than the filesystem" in err
    assert "File too large" in err and "give a smaller --size" in err
    assert not path.exists() and fakehelper.DAEMON == {}


def test_a_failed_target_create_removes_the_file_it_created(run, tmp_path, monkeypatch):
    monkeypatch.setattr(fakehelper.FakeHelper, "fail_create", True)
    rc, _, err = run("create-export", "--volume-id", "v1", "--path",
                     str(tmp_path / "v.img"), "--size", "1M")
    assert rc == 1 and "injected failure" in err
    assert not (tmp_path / "v.img").exists()


def test_a_failed_grant_removes_the_new_export_and_its_file(run, tmp_path, monkeypatch):
    def refuse(self, export, initiator):
        raise exception.TargetError(helper="fake", action="grant", iqn=export.iqn,
                                    reason="injected failure")
    monkeypatch.setattr(fakehelper.FakeHelper, "_grant", refuse)
    rc, _, err = run("create-export", "--volume-id", "v1", "--path",
                     str(tmp_path / "v.img"), "--size", "1M",
                     "--initiator", "iqn.2024-01.org.example:guest")
    assert rc == 1 and "injected failure" in err
    assert not (tmp_path / "v.img").exists() and fakehelper.DAEMON == {}
    assert run("list", "--json")[1].count("volume_id") == 0


def test_a_failed_create_never_removes_a_file_it_did_not_create(run, tmp_path,
                                                                monkeypatch):
    path = tmp_path / "mine.img"
    path.write_bytes(b"precious")
    monkeypatch.setattr(fakehelper.FakeHelper, "fail_create", True)
    rc, _, _ = run("create-export", "--volume-id", "v1", "--path", str(path))
    assert rc == 1 and path.read_bytes() == b"precious"


# --size on an existing file ---------------------------------------------------------

def test_size_grows_a_smaller_file_and_says_so(run, tmp_path):
    path = tmp_path / "v.img"
    path.write_bytes(b"data")
    rc, out, err = run("create-export", "--volume-id", "v1", "--path", str(path),
                       "--size", "2M")
    assert rc == 0 and json.loads(out)["serial"] == "v1"  # stdout stays the hand-off
    assert path.stat().st_size == 2 << 20 and path.read_bytes()[:4] == b"data"
    assert f"grew '{path}' from 4 to 2097152 bytes" in err


def test_size_never_shrinks_a_larger_file(run, tmp_path):
    path = tmp_path / "v.img"
    with open(path, "wb") as f:
        f.truncate(4 << 20)
    rc, _, err = run("create-export", "--volume-id", "v1", "--path", str(path),
                     "--size", "1M")
    assert rc == 0 and path.stat().st_size == 4 << 20
    assert "left as it is (never shrunk)" in err


def test_a_grown_file_is_shrunk_back_when_the_export_fails(run, tmp_path, monkeypatch):
    path = tmp_path / "v.img"
    path.write_bytes(b"data")
    monkeypatch.setattr(fakehelper.FakeHelper, "fail_create", True)
    rc, _, _ = run("create-export", "--volume-id", "v1", "--path", str(path),
                   "--size", "2M")
    assert rc == 1 and path.read_bytes() == b"data"


# -- item 6: only volumes are exported -------------------------------------------------

def test_etc_shadow_is_refused(run):
    rc, out, err = run("create-export", "--volume-id", "v1", "--path", "/etc/shadow")
    assert rc == 2 and out == "" and fakehelper.DAEMON == {}
    assert "Backing path '/etc/shadow' cannot be exported" in err
    assert "outside every backing root" in err and "[target] backing_roots" in err


def test_a_symlink_to_etc_shadow_is_refused(run, tmp_path):
    link = tmp_path / "v.img"
    link.symlink_to("/etc/shadow")
    for extra in ((), ("--size", "1M")):
        rc, _, err = run("create-export", "--volume-id", "v1", "--path", str(link), *extra)
        assert rc == 2 and "resolves to '/etc/shadow', which is outside" in err
    assert fakehelper.DAEMON == {} and link.is_symlink()


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: os.mkfifo(p), "is a FIFO"),
])
def test_what_is_no_volume_is_refused(run, tmp_path, make, fragment):
    path = tmp_path / "thing"
    make(path)
    rc, _, err = run("create-export", "--volume-id", "v1", "--path", str(path),
                     "--size", "1M")
    assert rc == 2 and fragment in err and fakehelper.DAEMON == {}


def test_dev_null_is_refused(run, tmp_path):
    conf = tmp_path / "hvplug.conf"
    conf.write_text(conf.read_text() + "backing_roots = /dev\n")
    rc, _, err = run("create-export", "--volume-id", "v1", "--path", "/dev/null")
    assert rc == 2 and "is a character device" in err


def test_a_symlink_into_the_roots_is_recorded_as_its_target(run, tmp_path):
    real = tmp_path / "real.img"
    real.write_bytes(b"x")
    (tmp_path / "alias.img").symlink_to(real)
    rc, _, _ = run("create-export", "--volume-id", "v1", "--path", str(tmp_path / "alias.img"))
    assert rc == 0
    rc, out, _ = run("show", "--volume-id", "v1", "--json")
    assert json.loads(out)["path"] == str(real)


def test_a_missing_backing_root_is_created_and_removed_again_on_failure(
        run, tmp_path, monkeypatch):
    conf = tmp_path / "hvplug.conf"
    root = tmp_path / "root"
    conf.write_text(conf.read_text() + f"backing_roots = {root}\n")
    monkeypatch.setattr(fakehelper.FakeHelper, "fail_create", True)
    rc, _, _ = run("create-export", "--volume-id", "v1", "--path", str(root / "v.img"),
                   "--size", "1M")
    assert rc == 1 and not root.exists()
    monkeypatch.setattr(fakehelper.FakeHelper, "fail_create", False)
    rc, _, err = run("create-export", "--volume-id", "v1", "--path", str(root / "v.img"),
                     "--size", "1M")
    assert rc == 0 and f"created the backing root '{root}'" in err
    assert (root / "v.img").stat().st_size == 1 << 20
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    rc, _, err = run("create-export", "--volume-id", "v2", "--path",
                     str(root / "sub" / "v.img"), "--size", "1M")
    assert rc == 2 and "does not exist" in err  # only a root itself is created
