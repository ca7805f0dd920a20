"""Unit tests of hvplug.target.lio against a fake configfs.

This machine has no LIO: the real rtslib-fb runs against
tests/fakeconfigfs.py, which makes the kernel's configfs reactions (default
groups on mkdir, ENOTEMPTY, attribute parsing, iSER, LUN links) happen in a
temporary directory.  Its module docstring says what it does not emulate.
"""

import errno
import json
import logging
import os
import stat
import subprocess
import sys
import threading

import pytest

from hvplug import exception
from hvplug.conf import CONF
from hvplug.target import registry
from tests.fakeconfigfs import FakeConfigfs

pytestmark = pytest.mark.filterwarnings("ignore:Will be removed in 1.0:DeprecationWarning")

VOLUME = "4f1c0c3e-6a4b-4d2f-9d1e-2b7a1c9e0f11"
OTHER = "9a0e3b51-0c7d-4a55-8e6f-33d2b1c4a700"
INITIATOR = "iqn.1993-08.org.debian:01:abc123"
PRIMARY, SECONDARY = "192.0.2.10", "2001:db8::10"
PORTALS = [f"{PRIMARY}:3260", f"[{SECONDARY}]:3260"]
IQN = f"iqn.2010-10.org.openstack:volume-{VOLUME}"
TPG = f"iscsi/{IQN}/tpgt_1"
SIZE = 1 << 20


@pytest.fixture
def fake(tmp_path, monkeypatch):
    fake = FakeConfigfs(tmp_path / "host").install(monkeypatch)
    yield fake
    import rtslib_fb.tcm
    rtslib_fb.tcm.bs_cache.clear()


@pytest.fixture
def saveconfig(tmp_path):
    return tmp_path / "etc-target" / "saveconfig.json"


@pytest.fixture
def make_lio(fake, tmp_path, saveconfig, config_fixture):
    config_fixture.config(group="target", iscsi_helper="lioadm",
                          exports_dir=str(tmp_path / "exports"),
                          lio_saveconfig=str(saveconfig), iscsi_ip_address=PRIMARY,
                          backing_roots=[str(tmp_path)],
                          iscsi_secondary_ip_addresses=[SECONDARY])

    def make(**options):
        if options:
            config_fixture.config(group="target", **options)
        return registry.target_from_conf(CONF.target)
    return make


@pytest.fixture
def lio(make_lio):
    return make_lio()


@pytest.fixture
def make_volume(tmp_path):
    def make(name: str = "vol.img", size: int = SIZE) -> str:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(size)
        return str(path)
    return make


@pytest.fixture
def volume(make_volume):
    return make_volume()


def exported(volume_id: str = VOLUME, index: int = 0) -> set[str]:
    """What fake.objects() lists for one file export with no initiator."""
    so, tpg = f"core/fileio_{index}/volume-{volume_id}", \
        f"iscsi/iqn.2010-10.org.openstack:volume-{volume_id}/tpgt_1"
    return {f"core/fileio_{index}", so, tpg.rsplit("/", 1)[0], tpg, f"{tpg}/lun/lun_1",
            f"{tpg}/lun/lun_1 -> {so}", f"{tpg}/np/{PORTALS[0]}", f"{tpg}/np/{PORTALS[1]}"}


def admitted(initiator: str = INITIATOR, tpg: str = TPG) -> set[str]:
    acl = f"{tpg}/acls/{initiator}"
    return {acl, f"{acl}/lun_1", f"{acl}/lun_1 -> {tpg}/lun/lun_1"}


def saved(path) -> dict:
    return json.loads(path.read_text())


# -- create ---------------------------------------------------------------------
def test_create_export_makes_exactly_the_lio_objects(lio, fake, volume):
    export = lio.create_export(VOLUME, volume)

    assert fake.objects() == exported()
    so = "core/fileio_0/volume-" + VOLUME
    assert fake.read(f"{so}/udev_path") == volume
    assert f"File: {volume}  Size: {SIZE}" in fake.read(f"{so}/info")
    assert "Status: ACTIVATED" in fake.read(f"{so}/info")
    assert fake.read(f"{TPG}/attrib/authentication") == "1"
    assert (f"{TPG}/attrib/authentication", "1") in fake.writes  # set, not assumed
    assert fake.read(f"{TPG}/enable") == "1"
    assert [fake.read(f"{TPG}/np/{p}/iser") for p in PORTALS] == ["0", "0"]
    assert export.tid == 1 and export.iqn == IQN and not export.iser
    assert export.provider_location() == f"{';'.join(PORTALS)},1 {IQN} 1"


def test_a_host_without_lio_is_a_clean_error(lio, fake, volume, monkeypatch):
    """rtslib reads /proc/modules before anything; a host (or container)
    without it must get hvplug's error naming LIO, not an OSError."""
    import rtslib_fb.root

    def no_proc_modules(*_args, **_kwargs):
        raise FileNotFoundError(2, "No such file or directory", "/proc/modules")

    monkeypatch.setattr(rtslib_fb.root, "modprobe", no_proc_modules)
    with pytest.raises(exception.TargetError, match="LIO is not available on this host"):
        lio.create_export(VOLUME, volume)
    assert fake.objects() == set()


def test_create_export_is_idempotent(lio, fake, volume):
    first = lio.create_export(VOLUME, volume)
    writes = len(fake.writes)
    assert lio.create_export(VOLUME, volume) == first
    assert len(fake.writes) == writes
    assert fake.objects() == exported()


@pytest.mark.parametrize("option", [{"enable_iser": True}, {"iscsi_protocol": "iser"}])
def test_enable_iser_turns_iser_on_for_every_portal_ipv6_included(
        make_lio, fake, volume, saveconfig, option):
    lio = make_lio(**option)
    export = lio.create_export(VOLUME, volume)

    # An early Cinder set iSER on the IPv4 portal only: every one counts.
    assert {p: fake.read(f"{TPG}/np/{p}/iser") for p in PORTALS} == dict.fromkeys(PORTALS, "1")
    portals = saved(saveconfig)["targets"][0]["tpgs"][0]["portals"]
    assert {(p["ip_address"], p["iser"]) for p in portals} == {
        (PRIMARY, True), (f"[{SECONDARY}]", True)}
    assert export.iser
    info = lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
    assert info["driver_volume_type"] == "iser"


def test_block_device_gets_the_block_backstore(make_lio, fake):
    device = next((d for d in (f"/dev/loop{n}" for n in range(8)) if _free_block(d)), None)
    if device is None:
        pytest.skip("no free loop block device on this host")
    lio = make_lio(backing_roots=["/dev"])
    lio.create_export(VOLUME, device)

    so = f"core/iblock_0/volume-{VOLUME}"
    assert so in fake.objects()
    assert fake.read(f"{so}/udev_path") == device
    assert f"iBlock device: {os.path.basename(device)}" in fake.read(f"{so}/info")
    lio.remove_export(VOLUME)
    assert fake.objects() == set()


def _free_block(path: str) -> bool:
    from rtslib_fb.utils import get_blockdev_type, is_dev_in_use
    return (os.path.exists(path) and stat.S_ISBLK(os.stat(path).st_mode)
            and get_blockdev_type(path) == 0 and not is_dev_in_use(path))


# -- connections ----------------------------------------------------------------
def test_initialize_connection_adds_an_acl_with_chap_and_the_mapped_lun(lio, fake, volume):
    export = lio.create_export(VOLUME, volume)
    info = lio.initialize_connection(VOLUME, {"initiator": INITIATOR})

    acl = f"{TPG}/acls/{INITIATOR}"
    assert fake.objects() == exported() | admitted()
    assert fake.read(f"{acl}/auth/userid") == export.auth_username
    assert fake.read(f"{acl}/auth/password") == export.auth_password
    assert fake.read(f"{acl}/lun_1/write_protect") == "0"
    assert info["data"]["target_lun"] == 1
    assert info["data"]["auth_password"] == export.auth_password
    assert info["data"]["target_portals"] == PORTALS


def test_terminate_connection_removes_the_acl(lio, fake, volume, saveconfig):
    lio.create_export(VOLUME, volume)
    lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
    lio.terminate_connection(VOLUME, {"initiator": INITIATOR})

    assert fake.objects() == exported()
    assert saved(saveconfig)["targets"][0]["tpgs"][0]["node_acls"] == []


def test_a_grant_that_cannot_be_saved_is_undone(lio, fake, volume, config_fixture):
    lio.create_export(VOLUME, volume)
    config_fixture.config(group="target", lio_saveconfig=f"{volume}/saveconfig.json")
    with pytest.raises(exception.TargetError, match=f"could not grant {INITIATOR} access"):
        lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
    assert fake.objects() == exported()
    assert lio.export(VOLUME).initiators == []


def test_initiator_must_be_an_iscsi_name(lio, volume):
    lio.create_export(VOLUME, volume)
    with pytest.raises(exception.InvalidInput, match="not an iSCSI name"):
        lio.initialize_connection(VOLUME, {"initiator": "host-1"})


# -- remove ---------------------------------------------------------------------
def test_remove_export_leaves_nothing(lio, fake, volume, saveconfig):
    lio.create_export(VOLUME, volume)
    lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
    lio.remove_export(VOLUME)

    assert fake.objects() == set()
    assert saved(saveconfig)["targets"] == saved(saveconfig)["storage_objects"] == []
    assert lio.store.load(VOLUME) is None
    assert os.path.getsize(volume) == SIZE  # the data is not LIO's to delete


def test_remove_export_tolerates_a_target_already_gone(lio, fake, volume, saveconfig):
    lio.create_export(VOLUME, volume)
    saveconfig.unlink()
    fake.reboot()
    lio.remove_export(VOLUME)
    assert fake.objects() == set()


# -- saved configuration and restore -------------------------------------------
def test_saveconfig_is_0600_and_holds_every_object(lio, volume, saveconfig):
    umask = os.umask(0o022)
    try:
        export = lio.create_export(VOLUME, volume)
        lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
        assert os.umask(0o022) == 0o022  # rtslib's umask change did not leak
    finally:
        os.umask(umask)

    assert stat.S_IMODE(saveconfig.stat().st_mode) == 0o600
    config = saved(saveconfig)
    [so] = config["storage_objects"]
    assert (so["plugin"], so["name"], so["dev"], so["size"]) == (
        "fileio", f"volume-{VOLUME}", volume, SIZE)
    [target] = config["targets"]
    [tpg] = target["tpgs"]
    assert (target["wwn"], tpg["tag"], tpg["enable"]) == (IQN, 1, True)
    assert tpg["attributes"]["authentication"] == 1
    assert [lun["storage_object"] for lun in tpg["luns"]] == [
        f"/backstores/fileio/volume-{VOLUME}"]
    assert sorted(f"{p['ip_address']}:{p['port']}" for p in tpg["portals"]) == sorted(PORTALS)
    [acl] = tpg["node_acls"]
    assert (acl["node_wwn"], acl["chap_userid"], acl["chap_password"]) == (
        INITIATOR, export.auth_username, export.auth_password)
    assert [m["tpg_lun"] for m in acl["mapped_luns"]] == [1]


def test_ensure_exports_after_a_restart_restores_the_saved_config(
        lio, fake, make_volume, caplog):
    lio.create_export(VOLUME, make_volume())
    lio.create_export(OTHER, make_volume("other.img"))
    lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
    before = {p: fake.read(f"{TPG}/acls/{INITIATOR}/auth/{p}") for p in ("userid", "password")}
    objects = fake.objects()

    fake.reboot()
    assert fake.objects() == set()
    with caplog.at_level(logging.WARNING, logger="hvplug.target.lio"):
        exports = lio.ensure_exports()

    assert {e.volume_id for e in exports} == {VOLUME, OTHER}
    assert fake.objects() == objects
    assert {p: fake.read(f"{TPG}/acls/{INITIATOR}/auth/{p}") for p in before} == before
    assert "restored it from" in caplog.text


def test_ensure_export_without_saveconfig_recreates_from_the_record(
        lio, fake, volume, saveconfig):
    export = lio.create_export(VOLUME, volume)
    lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
    saveconfig.unlink()
    fake.reboot()

    lio.ensure_export(VOLUME)

    assert fake.objects() == exported() | admitted()
    assert fake.read(f"{TPG}/acls/{INITIATOR}/auth/password") == export.auth_password
    assert saved(saveconfig)["targets"][0]["wwn"] == IQN


def test_creating_after_a_restart_keeps_the_other_exports_saved(
        lio, fake, make_volume, saveconfig):
    lio.create_export(VOLUME, make_volume())
    fake.reboot()
    lio.create_export(OTHER, make_volume("other.img"))

    # Saving without restoring first would have written OTHER alone.
    assert {t["wwn"] for t in saved(saveconfig)["targets"]} == {
        IQN, f"iqn.2010-10.org.openstack:volume-{OTHER}"}
    assert exported(VOLUME) <= fake.objects()


def test_an_unreadable_saveconfig_is_set_aside(lio, fake, volume, saveconfig):
    lio.create_export(VOLUME, volume)
    saveconfig.write_text("{not json")
    fake.reboot()

    lio.ensure_export(VOLUME)

    assert fake.objects() == exported()
    assert saveconfig.with_name("saveconfig.json.unreadable").read_text() == "{not json"
    assert saved(saveconfig)["targets"][0]["wwn"] == IQN


def test_an_incomplete_target_left_by_a_crash_is_replaced(lio, fake, volume):
    import rtslib_fb
    rtslib_fb.RTSRoot()
    rtslib_fb.Target(rtslib_fb.FabricModule("iscsi"), IQN, mode="create")

    lio.create_export(VOLUME, volume)
    assert fake.objects() == exported()


def test_granting_on_a_target_the_kernel_lost_says_what_to_run(lio, fake, volume, saveconfig):
    lio.create_export(VOLUME, volume)
    saveconfig.unlink()
    fake.reboot()
    with pytest.raises(exception.TargetError, match="hvplug target ensure-exports"):
        lio.initialize_connection(VOLUME, {"initiator": INITIATOR})


# -- failures -------------------------------------------------------------------
def test_a_portal_failing_midway_leaves_nothing(lio, fake, volume, saveconfig):
    fake.unbindable[SECONDARY] = errno.EADDRNOTAVAIL

    with pytest.raises(exception.TargetError) as caught:
        lio.create_export(VOLUME, volume)

    assert f"lioadm could not create target {IQN}" in str(caught.value)
    assert "Cannot assign requested address" in str(caught.value)
    assert fake.objects() == set()
    assert lio.store.load(VOLUME) is None and not saveconfig.exists()


def test_iser_the_kernel_refuses_raises_iser_unavailable_and_leaves_nothing(
        make_lio, fake, volume, saveconfig):
    fake.iser_supported = False
    lio = make_lio(enable_iser=True)

    with pytest.raises(exception.IserUnavailable, match="iSER/RDMA is unavailable") as caught:
        lio.create_export(VOLUME, volume)

    assert f"portal {PORTALS[0]}" in str(caught.value)
    assert fake.objects() == set()
    assert lio.store.load(VOLUME) is None and not saveconfig.exists()


def test_a_kernel_without_the_iser_attribute_raises_iser_unavailable(make_lio, fake, volume):
    fake.iser_attr = False  # rtslib itself stays silent then
    with pytest.raises(exception.IserUnavailable, match="no iSER switch"):
        make_lio(enable_iser=True).create_export(VOLUME, volume)
    assert fake.objects() == set()


def test_a_host_without_lio_gets_a_clear_error(lio, fake, volume):
    fake.lio_available = False
    with pytest.raises(exception.TargetError, match="modprobe target_core_mod"):
        lio.create_export(VOLUME, volume)
    assert lio.store.load(VOLUME) is None


@pytest.mark.parametrize("name", ["vol,1.img", "vol 1.img", "vol:1.img"])
def test_a_path_lio_would_misread_is_refused(lio, fake, make_volume, name):
    with pytest.raises(exception.InvalidInput, match="LIO cannot export"):
        lio.create_export(VOLUME, make_volume(name))
    assert fake.objects() == set()


def test_an_empty_backing_file_is_refused(lio, make_volume):
    with pytest.raises(exception.InvalidInput, match="give it a size"):
        lio.create_export(VOLUME, make_volume(size=0))


# -- secrets, locking, imports -------------------------------------------------
def test_the_chap_password_is_never_logged_nor_in_an_error(
        make_lio, fake, make_volume, caplog):
    caplog.set_level(logging.DEBUG)
    lio = make_lio()
    export = lio.create_export(VOLUME, make_volume())
    lio.initialize_connection(VOLUME, {"initiator": INITIATOR})
    fake.reboot()
    lio.ensure_exports()
    lio.terminate_connection(VOLUME, {"initiator": INITIATOR})
    fake.unbindable[SECONDARY] = 0
    with pytest.raises(exception.TargetError) as caught:
        lio.create_export(OTHER, make_volume("other.img"))
    lio.remove_export(VOLUME)

    assert export.auth_password not in caplog.text
    assert export.auth_password not in str(caught.value)
    assert "LIO target" in caplog.text  # the flow did log


def test_concurrent_creates_are_serialised(lio, fake, make_volume):
    ids = [f"{n}{VOLUME[1:]}" for n in range(6)]
    paths = {i: make_volume(f"{i}.img") for i in ids}
    errors = []

    def create(volume_id):
        try:
            lio.create_export(volume_id, paths[volume_id])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=create, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    hbas = {o for o in fake.objects() if o.count("/") == 1 and o.startswith("core/")}
    assert len(hbas) == len(ids)
    assert len([o for o in fake.objects() if o.endswith("/lun/lun_1")]) == len(ids)


def test_importing_the_helper_does_not_import_rtslib():
    code = ("import sys, hvplug.target.lio, hvplug.target.registry; "
            "print('rtslib_fb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# -- the fake behaves as configfs does, where the tests above rely on it -------
@pytest.mark.parametrize(("operation", "code"), [
    (lambda t: os.mkdir(f"{t}/{TPG}/stray"), errno.EPERM),            # no make_group
    (lambda t: os.mkdir(f"{t}/{TPG}/np/{SECONDARY}:3260"), errno.EINVAL),  # IPv6 sans []
    (lambda t: os.mkdir(f"{t}/{TPG}/lun/one"), errno.EINVAL),
    (lambda t: os.rmdir(f"{t}/iscsi/{IQN}"), errno.ENOTEMPTY),        # still has tpgt_1
    (lambda t: os.rmdir(f"{t}/{TPG}/np"), errno.EPERM),               # a default group
    (lambda t: os.unlink(f"{t}/{TPG}/enable"), errno.EPERM),
    (lambda t: (t / TPG / "attrib" / "nosuch").write_text("1"), errno.EACCES),
    (lambda t: (t / TPG / "dynamic_sessions").write_text("1"), errno.EACCES),  # read-only
    (lambda t: (t / TPG / "attrib" / "authentication").write_text("yes"), errno.EINVAL),
    (lambda t: (t / TPG / "enable").write_text("1"), errno.EINVAL),   # already enabled
])
def test_the_fake_refuses_what_configfs_refuses(lio, fake, volume, operation, code):
    lio.create_export(VOLUME, volume)
    with pytest.raises(OSError) as caught:
        operation(fake.target)
    assert caught.value.errno == code


def test_the_fake_links_luns_only_to_configured_storage(lio, fake, volume):
    import rtslib_fb
    lio.create_export(VOLUME, volume)
    so = fake.target / "core" / "fileio_0" / f"volume-{VOLUME}"
    tpg = rtslib_fb.TPG(rtslib_fb.Target(rtslib_fb.FabricModule("iscsi"), IQN), 1)
    os.mkdir(fake.target / TPG / "lun" / "lun_2")
    with pytest.raises(OSError) as caught:  # LUN 2 -> the same device twice is fine,
        os.symlink(fake.target / TPG, fake.target / TPG / "lun" / "lun_2" / "x")
    assert caught.value.errno == errno.EFAULT  # but not to a TPG
    os.symlink(so, fake.target / TPG / "lun" / "lun_2" / "x")
    assert [lun.lun for lun in tpg.luns] == [1, 2]


def test_a_target_of_the_same_iqn_serving_another_file_is_refused(lio, fake, make_volume):
    first = lio.create_export(VOLUME, make_volume())
    before = fake.objects()
    lio.store.remove(VOLUME)  # the record is gone; the kernel still serves the first file
    with pytest.raises(exception.IqnInUse) as err:
        lio.create_export(VOLUME, make_volume("other.img"))
    assert repr(first.path) in str(err.value) and "targetcli" in str(err.value)
    assert fake.objects() == before and lio.store.load(VOLUME) is None
