import os
import stat

import pytest

from hvplug import exception
from hvplug.conf import CONF
from hvplug.conf.choices import TARGET_HELPERS
from hvplug.target import base, registry
from hvplug.target.export import Export, ExportStore
from tests.unit.target import fakehelper


@pytest.fixture
def root(tmp_path):
    """The one backing root of these tests."""
    path = tmp_path / "vols"
    path.mkdir()
    return path


@pytest.fixture
def vol(root):
    """vol(name) -> the path of a 1 MiB file under the backing root."""
    def make(name: str = "v1.img") -> str:
        path = root / name
        if not path.exists():
            with open(path, "wb") as f:
                f.truncate(1 << 20)
        return str(path)
    return make


@pytest.fixture
def target(tmp_path, root, config_fixture):
    fakehelper.DAEMON.clear()
    config_fixture.config(group="target", exports_dir=str(tmp_path / "exports"),
                          volumes_dir=str(tmp_path / "volumes"),
                          backing_roots=[str(root)])
    yield fakehelper.FakeHelper(CONF.target)
    fakehelper.DAEMON.clear()


def test_create_export_records_and_exports(target, tmp_path, vol):
    export = target.create_export("vol-1", vol("v1.img"))
    assert export.iqn == "iqn.2010-10.org.openstack:volume-vol-1"
    assert export.portals == ["127.0.0.1:3260"] and export.lun == 1 and export.tid == 1
    assert len(export.auth_username) == 20 and len(export.auth_password) == 16
    assert export.auth_password.isalnum()
    assert fakehelper.DAEMON[export.iqn]["path"] == vol("v1.img")
    record = tmp_path / "exports" / "vol-1.json"
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(record.parent).st_mode) == 0o700
    assert ExportStore(tmp_path / "exports").load("vol-1") == export


def test_create_export_is_idempotent_and_keeps_credentials(target, vol):
    first = target.create_export("vol-1", vol("v1.img"))
    again = target.create_export("vol-1", vol("v1.img"))
    assert again == first
    with pytest.raises(exception.IqnInUse) as err:
        target.create_export("vol-1", vol("other.img"))
    assert err.value.exit_code == 2
    assert "remove-export --volume-id vol-1" in str(err.value)
    assert repr(vol("v1.img")) in str(err.value)
    assert target.export("vol-1") == first and len(fakehelper.DAEMON) == 1


def test_credentials_differ_between_exports(target, vol):
    a, b = target.create_export("a", vol("a")), target.create_export("b", vol("b"))
    assert (a.auth_username, a.auth_password) != (b.auth_username, b.auth_password)


def test_connection_info_shape(target, vol):
    target.create_export("vol-1", vol())
    info = target.initialize_connection("vol-1", {"initiator": "iqn.1993-08.org.debian:01:x"})
    export = target.export("vol-1")
    assert info == {"driver_volume_type": "iscsi", "data": {
        "target_discovered": False, "target_portal": "127.0.0.1:3260",
        "target_iqn": export.iqn, "target_lun": 1, "volume_id": "vol-1",
        "encrypted": False, "access_mode": "rw", "auth_method": "CHAP",
        "auth_username": export.auth_username, "auth_password": export.auth_password},
        "serial": "vol-1"}
    assert fakehelper.DAEMON[export.iqn]["acl"] == ["iqn.1993-08.org.debian:01:x"]
    assert target.export("vol-1").initiators == ["iqn.1993-08.org.debian:01:x"]
    target.terminate_connection("vol-1", {"initiator": "iqn.1993-08.org.debian:01:x"})
    assert fakehelper.DAEMON[export.iqn]["acl"] == []


def test_multipath_keys_with_secondary_ipv6_address(target, config_fixture, vol):
    config_fixture.config(group="target", iscsi_ip_address="192.0.2.10",
                          iscsi_secondary_ip_addresses=["2001:db8::10", "[2001:db8::11]"],
                          iscsi_port=3261)
    fresh = fakehelper.FakeHelper(CONF.target)
    fresh.create_export("vol-2", vol("v2.img"))
    data = fresh.initialize_connection("vol-2")["data"]
    assert data["target_portals"] == ["192.0.2.10:3261", "[2001:db8::10]:3261",
                                      "[2001:db8::11]:3261"]
    assert data["target_luns"] == [1, 1, 1] and len(set(data["target_iqns"])) == 1


def test_multipath_keys_when_the_connector_asks(target, vol):
    target.create_export("vol-1", vol())
    data = target.initialize_connection("vol-1", {"multipath": True})["data"]
    assert data["target_portals"] == ["127.0.0.1:3260"]


@pytest.mark.parametrize(("options", "expected"), [
    ({}, "iscsi"), ({"enable_iser": True}, "iser"), ({"iscsi_protocol": "iser"}, "iser"),
    ({"iscsi_protocol": "iscsi"}, "iscsi")])
def test_driver_volume_type_follows_iser(target, config_fixture, vol, options, expected):
    config_fixture.config(group="target", **options)
    fresh = fakehelper.FakeHelper(CONF.target)
    fresh.create_export("v", vol("v"))
    assert fresh.initialize_connection("v")["driver_volume_type"] == expected
    assert fresh.export("v").iser is (expected == "iser")


def test_every_helper_choice_has_a_class_and_no_other():
    assert sorted(registry.HELPER_CLASSES) == sorted(TARGET_HELPERS)


def test_iseradm_means_tgt_with_iser(target, config_fixture, caplog, monkeypatch):
    monkeypatch.setitem(registry.HELPER_CLASSES, "iseradm",
                        "tests.unit.target.fakehelper.FakeHelper")
    helper = registry.target_from_conf(CONF.target, helper="iseradm")
    assert helper.iser and helper.driver_volume_type == "iser"
    assert "iseradm is deprecated" in caplog.text


def test_helper_without_iser_refuses_enable_iser(target, config_fixture, monkeypatch):
    config_fixture.config(group="target", enable_iser=True)
    monkeypatch.setattr(fakehelper.FakeHelper, "supports_iser", False)
    with pytest.raises(exception.InvalidInput) as err:
        fakehelper.FakeHelper(CONF.target)
    assert "enable_iser" in str(err.value)


def test_ensure_export_recreates_what_the_daemon_lost(target, vol):
    target.create_export("a", vol("a"))
    target.create_export("b", vol("b"))
    fakehelper.DAEMON.clear()  # tgtd restarted
    assert sorted(e.volume_id for e in target.ensure_exports()) == ["a", "b"]
    assert set(fakehelper.DAEMON) == {target.iqn("a"), target.iqn("b")}


def test_remove_export(target, vol):
    target.create_export("a", vol("a"))
    target.remove_export("a")
    assert fakehelper.DAEMON == {} and target.store.all() == []
    with pytest.raises(exception.ExportNotFound):
        target.remove_export("a")


def test_failed_create_records_nothing(target, monkeypatch, vol):
    monkeypatch.setattr(fakehelper.FakeHelper, "fail_create", True)
    with pytest.raises(exception.TargetError):
        target.create_export("a", vol("a"))
    assert target.store.all() == []


@pytest.mark.parametrize("volume_id", ["", "../etc", "a/b", "-x", "a" * 129, None,
                                       "vol\n", "vol\r", "vol\x00", " vol", "vol:1"])
def test_bad_volume_ids(target, vol, volume_id):
    with pytest.raises(exception.InvalidInput) as err:
        target.create_export(volume_id, vol("a"))
    assert repr(volume_id) in str(err.value)  # control characters shown escaped
    assert "\n" not in str(err.value) and fakehelper.DAEMON == {}
    assert target.store.volume_ids() == []


def test_random_chap_uses_the_os_rng(monkeypatch):
    calls = []
    real_choice = base.secrets.choice
    monkeypatch.setattr(base.secrets, "choice", lambda seq: calls.append(1) or real_choice(seq))
    assert len(base.random_chap(16)) == 16 and len(calls) == 16


def test_public_record_masks_the_password(target, vol):
    export = target.create_export("a", vol("a"))
    assert export.public()["auth_password"] == "***"
    assert export.public(show_secrets=True)["auth_password"] == export.auth_password
    assert export.provider_location() == f"127.0.0.1:3260,1 {export.iqn} 1"


# -- Two volumes never share an IQN ---------------------------------------------

def test_volume_ids_differing_only_in_case_are_refused(target, vol):
    first = target.create_export("Coll1", vol("a"))
    with pytest.raises(exception.VolumeIdCaseCollision) as err:
        target.create_export("coll1", vol("b"))
    message = str(err.value)
    assert err.value.exit_code == 2
    assert "'coll1'" in message and "'Coll1'" in message and first.iqn in message
    assert str(target.store.record_path("Coll1")) in message
    # nothing changed: the first export is still served from its own file
    assert {first.iqn: fakehelper.DAEMON[first.iqn]} == fakehelper.DAEMON
    assert fakehelper.DAEMON[first.iqn]["path"] == vol("a")
    assert target.store.volume_ids() == ["Coll1"]
    with pytest.raises(exception.VolumeIdCaseCollision):
        target.check_new_export("COLL1", vol("a"))
    assert target.create_export("Coll1", vol("a")) == first  # the same id: idempotent


def test_a_twin_record_is_a_collision_even_when_it_cannot_be_read(target, vol):
    target.store.directory.mkdir(parents=True)
    (target.store.directory / "Coll1.json").write_text("{")
    with pytest.raises(exception.VolumeIdCaseCollision):
        target.create_export("coll1", vol("b"))
    assert fakehelper.DAEMON == {}


# -- Only volumes are exported ------------------------------------------------------

@pytest.fixture
def refused(target):
    def check(path, fragment):
        with pytest.raises(exception.BackingPathRefused) as err:
            target.create_export("v", path)
        message = str(err.value)
        assert err.value.exit_code == 2 and fragment in message, message
        assert "[target] backing_roots" in message  # the option to change
        assert fakehelper.DAEMON == {} and target.store.volume_ids() == []
        return message
    return check


def test_etc_shadow_is_refused(refused):
    message = refused("/etc/shadow", "outside every backing root")
    assert "'/etc/shadow'" in message


def test_a_symlink_to_etc_shadow_inside_a_root_is_refused(refused, root):
    link = root / "innocent.img"
    link.symlink_to("/etc/shadow")
    message = refused(str(link), "resolves to '/etc/shadow', which is outside")
    assert repr(str(link)) in message


def test_a_symlink_through_a_directory_is_followed(refused, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.img").write_bytes(b"x")
    (root / "d").symlink_to(outside)
    refused(str(root / "d" / "x.img"), "outside every backing root")


def test_a_symlink_within_the_roots_is_exported_as_its_target(target, root, vol):
    real = vol("real.img")
    (root / "alias.img").symlink_to(real)
    export = target.create_export("v", str(root / "alias.img"))
    assert export.path == real and fakehelper.DAEMON[export.iqn]["path"] == real


def test_a_directory_is_refused(refused, root):
    (root / "dir").mkdir()
    refused(str(root / "dir"), "is a directory, not a regular file or a block device")


def test_a_fifo_is_refused(refused, root):
    os.mkfifo(root / "fifo")
    refused(str(root / "fifo"), "is a FIFO")


def test_a_character_device_is_refused(refused, config_fixture):
    config_fixture.config(group="target", backing_roots=["/dev"])
    refused("/dev/null", "is a character device")


def test_relative_empty_and_missing_paths_are_refused(refused, root):
    refused("vols/a.img", "not an absolute path")
    refused("", "empty")
    refused(str(root / "missing.img"), "does not exist")


def test_a_relative_backing_root_is_a_configuration_error(config_fixture):
    config_fixture.config(group="target", backing_roots=["/dev", "relative/dir"])
    with pytest.raises(exception.ConfigFileError, match="'relative/dir' is not an absolute"):
        base.backing_roots(CONF.target)


def test_the_root_itself_and_the_parent_of_a_root_are_refused(refused, root):
    refused(str(root), "is a directory")
    refused(str(root / ".." / "exports"), "outside every backing root")


@pytest.mark.parametrize("name", ["volume-other.conf", ".lock", "chiscsi/volume-other"])
def test_hvplugs_own_files_are_refused_inside_a_root(target, refused, config_fixture,
                                                     tmp_path, name):
    config_fixture.config(group="target", backing_roots=[str(tmp_path)])
    path = tmp_path / "volumes" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("incominguser user password\n")
    refused(str(path), "one of hvplug's own files")


def test_export_records_are_refused_inside_a_root(target, refused, config_fixture,
                                                  tmp_path, vol):
    target.create_export("a", vol("a"))
    config_fixture.config(group="target", backing_roots=[str(tmp_path)])
    with pytest.raises(exception.BackingPathRefused, match="one of hvplug's own files"):
        target.create_export("b", str(target.store.record_path("a")))


def test_a_block_device_passes_the_rule():
    device = next((f"/dev/{name}" for name in sorted(os.listdir("/sys/block"))
                   if os.path.exists(f"/dev/{name}")), None) \
        if os.path.isdir("/sys/block") else None
    if device is None or not stat.S_ISBLK(os.stat(device).st_mode):
        pytest.skip("no block device here")
    assert base.resolve_backing(CONF.target, device) == os.path.realpath(device)


def test_the_default_roots_are_the_volumes_directory_and_dev():
    assert CONF.target.backing_roots == ["/var/lib/hvplug/volumes", "/dev"]


def test_restore_refuses_a_path_that_became_a_symlink(target, root, vol):
    export = target.create_export("a", vol("a"))
    os.unlink(export.path)
    os.symlink("/etc/shadow", export.path)
    fakehelper.DAEMON.clear()
    with pytest.raises(exception.BackingPathRefused, match="outside every backing root"):
        target.ensure_export("a")
    assert fakehelper.DAEMON == {}


def test_restore_refuses_a_symlink_swapped_in_inside_the_roots(target, root, vol):
    export = target.create_export("a", vol("a"))
    other = vol("other")
    os.unlink(export.path)
    os.symlink(other, export.path)
    fakehelper.DAEMON.clear()
    with pytest.raises(exception.BackingPathRefused, match="a symlink replaced it"):
        target.ensure_export("a")


def test_one_failed_restore_does_not_stop_the_others(target, vol, monkeypatch):
    for name in ("a", "b", "c"):
        target.create_export(name, vol(name))
    fakehelper.DAEMON.clear()
    os.unlink(vol("b"))
    done, failed = target.restore_exports(target.store.all())
    assert [e.volume_id for e in done] == ["a", "c"]
    assert [(e.volume_id, type(exc)) for e, exc in failed] == [
        ("b", exception.BackingPathRefused)]
    assert set(fakehelper.DAEMON) == {target.iqn("a"), target.iqn("c")}
    fakehelper.DAEMON.clear()
    with pytest.raises(exception.TargetError, match="1 of 3 exports failed"):
        target.ensure_exports()
    assert set(fakehelper.DAEMON) == {target.iqn("a"), target.iqn("c")}


@pytest.mark.parametrize("initiator", ["iqn.1993-08.org.debian:01:ab", "iqn.2024-01.x.y",
                                       "eui.02004567A425678D",
                                       "naa.52004567BA64678D"])
def test_good_initiator_names(initiator):
    assert base.check_initiator(initiator) == initiator


@pytest.mark.parametrize("initiator", ["guest", "iqn.1993-08.org.debian:01:ab\n",
                                       "iqn.1993-08.org deb", "eui.123",
                                       "iqn.2024-01.x:" + "a" * 220, "iqn.x;rm", 42])
def test_bad_initiator_names_are_refused_before_any_grant(target, vol, initiator):
    target.create_export("a", vol("a"))
    with pytest.raises(exception.InvalidInput) as err:
        target.initialize_connection("a", {"initiator": initiator})
    assert repr(initiator) in str(err.value) and "\n" not in str(err.value)
    assert fakehelper.DAEMON[target.iqn("a")]["acl"] == []


def test_a_helper_path_naming_no_target_helper_is_refused(monkeypatch):
    monkeypatch.setitem(registry.HELPER_CLASSES, "tgtadm", "hvplug.target.export.ExportStore")
    with pytest.raises(exception.InvalidInput) as err:
        registry.helper_class("tgtadm")
    assert str(err.value) == ("Invalid input: [target] iscsi_helper = tgtadm: "
                              "hvplug.target.export.ExportStore is not a "
                              "ISCSITargetHelper subclass")


def _export(**values):
    fields = {"volume_id": "v", "path": "/srv/v.img", "iqn": "iqn.2010-10.org.x:volume-v",
              "helper": "ietadm", "portals": ["192.0.2.10:3260"],
              "auth_username": "user1", "auth_password": "Secret99"}
    return Export(**{**fields, **values})


@pytest.mark.parametrize(("values", "chap"), [
    ({}, ("user1", "Secret99")),
    ({"auth_method": None}, None),
    ({"auth_username": ""}, None),
    ({"auth_password": None}, None),
])
def test_chap_credentials_only_when_complete(values, chap):
    export = _export(**values)
    assert export.chap == chap and export.has_chap is (chap is not None)


def test_tool_error_words_each_cause_and_masks_the_password():
    export = _export()
    failed = exception.ProcessExecutionError(cmd="ietadm", status=145,
                                             stderr="Secret99 refused")
    hints = {145: "Is ietd running?"}
    assert base.tool_error("ietadm", "create", export, failed, status_hints=hints).message == (
        "ietadm could not create target iqn.2010-10.org.x:volume-v: "
        "ietadm exited 145: *** refused Is ietd running?")
    other = exception.ProcessExecutionError(cmd="ietadm", status=1, stderr="no")
    assert base.tool_error("ietadm", "create", export, other,
                           status_hints=hints).kwargs["reason"] == "ietadm exited 1: no"
    inner = exception.TargetError(helper="iscsictl", action="create", iqn="x", reason="why")
    assert base.tool_error("iscsictl", "create", export, inner).kwargs["reason"] == "why"
    gone = FileNotFoundError(2, "No such file or directory")
    assert base.tool_error("ietadm", "remove", export, gone, conf_file="/etc/ietd.conf") \
        .kwargs["reason"] == "No such file or directory (/etc/ietd.conf)"
    gone.filename = "/srv/x"
    assert base.tool_error("ietadm", "remove", export, gone, conf_file="/etc/ietd.conf") \
        .kwargs["reason"] == "No such file or directory (/srv/x)"
    assert base.tool_error("iscsictl", "check", export, "password Secret99") \
        .kwargs["reason"] == "password ***"
