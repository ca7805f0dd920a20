import os
import stat

import pytest

from hvplug import exception
from hvplug.conf import CONF
from hvplug.target import base, registry
from hvplug.target.export import ExportStore
from tests.unit.target import fakehelper


@pytest.fixture
def target(tmp_path, config_fixture):
    fakehelper.DAEMON.clear()
    config_fixture.config(group="target", exports_dir=str(tmp_path / "exports"),
                          volumes_dir=str(tmp_path / "volumes"))
    yield fakehelper.FakeHelper(CONF.target)
    fakehelper.DAEMON.clear()


def test_create_export_records_and_exports(target, tmp_path):
    export = target.create_export("vol-1", "/srv/v1.img")
    assert export.iqn == "iqn.2010-10.org.openstack:volume-vol-1"
    assert export.portals == ["127.0.0.1:3260"] and export.lun == 1 and export.tid == 1
    assert len(export.auth_username) == 20 and len(export.auth_password) == 16
    assert export.auth_password.isalnum()
    assert fakehelper.DAEMON[export.iqn]["path"] == "/srv/v1.img"
    record = tmp_path / "exports" / "vol-1.json"
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(record.parent).st_mode) == 0o700
    assert ExportStore(tmp_path / "exports").load("vol-1") == export


def test_create_export_is_idempotent_and_keeps_credentials(target):
    first = target.create_export("vol-1", "/srv/v1.img")
    again = target.create_export("vol-1", "/srv/v1.img")
    assert again == first
    with pytest.raises(exception.InvalidInput):
        target.create_export("vol-1", "/srv/other.img")


def test_credentials_differ_between_exports(target):
    a, b = target.create_export("a", "/a"), target.create_export("b", "/b")
    assert (a.auth_username, a.auth_password) != (b.auth_username, b.auth_password)


def test_connection_info_shape(target):
    target.create_export("vol-1", "/srv/v1.img")
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


def test_multipath_keys_with_secondary_ipv6_address(target, config_fixture):
    config_fixture.config(group="target", iscsi_ip_address="192.0.2.10",
                          iscsi_secondary_ip_addresses=["2001:db8::10", "[2001:db8::11]"],
                          iscsi_port=3261)
    fresh = fakehelper.FakeHelper(CONF.target)
    fresh.create_export("vol-2", "/srv/v2.img")
    data = fresh.initialize_connection("vol-2")["data"]
    assert data["target_portals"] == ["192.0.2.10:3261", "[2001:db8::10]:3261",
                                      "[2001:db8::11]:3261"]
    assert data["target_luns"] == [1, 1, 1] and len(set(data["target_iqns"])) == 1


def test_multipath_keys_when_the_connector_asks(target):
    target.create_export("vol-1", "/srv/v1.img")
    data = target.initialize_connection("vol-1", {"multipath": True})["data"]
    assert data["target_portals"] == ["127.0.0.1:3260"]


@pytest.mark.parametrize("options, expected", [
    ({}, "iscsi"), ({"enable_iser": True}, "iser"), ({"iscsi_protocol": "iser"}, "iser"),
    ({"iscsi_protocol": "iscsi"}, "iscsi")])
def test_driver_volume_type_follows_iser(target, config_fixture, options, expected):
    config_fixture.config(group="target", **options)
    fresh = fakehelper.FakeHelper(CONF.target)
    fresh.create_export("v", "/v")
    assert fresh.initialize_connection("v")["driver_volume_type"] == expected
    assert fresh.export("v").iser is (expected == "iser")


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


def test_ensure_export_recreates_what_the_daemon_lost(target):
    target.create_export("a", "/a")
    target.create_export("b", "/b")
    fakehelper.DAEMON.clear()  # tgtd restarted
    assert sorted(e.volume_id for e in target.ensure_exports()) == ["a", "b"]
    assert set(fakehelper.DAEMON) == {target.iqn("a"), target.iqn("b")}


def test_remove_export(target):
    target.create_export("a", "/a")
    target.remove_export("a")
    assert fakehelper.DAEMON == {} and target.store.all() == []
    with pytest.raises(exception.ExportNotFound):
        target.remove_export("a")


def test_failed_create_records_nothing(target, monkeypatch):
    monkeypatch.setattr(fakehelper.FakeHelper, "fail_create", True)
    with pytest.raises(exception.TargetError):
        target.create_export("a", "/a")
    assert target.store.all() == []


@pytest.mark.parametrize("volume_id", ["", "../etc", "a/b", "-x", "a" * 129, None])
def test_bad_volume_ids(target, volume_id):
    with pytest.raises(exception.InvalidInput):
        target.create_export(volume_id, "/a")


def test_random_chap_uses_the_os_rng(monkeypatch):
    calls = []
    real_choice = base.secrets.choice
    monkeypatch.setattr(base.secrets, "choice", lambda seq: calls.append(1) or real_choice(seq))
    assert len(base.random_chap(16)) == 16 and len(calls) == 16


def test_public_record_masks_the_password(target):
    export = target.create_export("a", "/a")
    assert export.public()["auth_password"] == "***"
    assert export.public(show_secrets=True)["auth_password"] == export.auth_password
    assert export.provider_location() == f"127.0.0.1:3260,1 {export.iqn} 1"
