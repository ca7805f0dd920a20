"""Managed save, domain listing filters, disk-only snapshots and secret metadata:
the fake libvirt and a real libvirtd must agree (see test_libvirt_contract.py).

Every guest and secret here is uniquely named and removed by ``scratch``, even
when a test fails; a guest with a saved image or snapshots is undefined with
the flags that drop them too.
"""

import uuid
from types import ModuleType
from typing import Any

from lxml import etree

from hvplug.templates import guest_xml
from tests import fakelibvirt
from tests.contract.conftest import Scratch
from tests.contract.test_libvirt_contract import disk_of, file_disk, raises


def names(conn: Any, flags: int, wanted: set[str]) -> set[str]:
    return {d.name() for d in conn.listAllDomains(flags)} & wanted


# ---------------------------------------------------------------- managed save

def test_managed_save_keeps_the_live_disks_and_start_resumes(lv: ModuleType,
                                                             scratch: Scratch) -> None:
    dom, path = scratch.guest(), scratch.disk_file()
    dom.attachDeviceFlags(file_disk(path), lv.VIR_DOMAIN_AFFECT_LIVE)
    assert dom.hasManagedSaveImage(0) == 0
    assert dom.managedSave(0) == 0
    assert (dom.isActive(), dom.hasManagedSaveImage(0)) == (0, 1)
    assert dom.state() == [lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_SAVED]
    saved = etree.fromstring(dom.managedSaveGetXMLDesc(0).encode()).find("devices/disk")
    assert saved.find("source").get("file") == path
    assert saved.find("alias") is None and saved.find("source").get("index") is None
    assert disk_of(dom, "sda") is None  # a stopped domain's XML is its configuration
    assert dom.create() == 0
    assert dom.state() == [lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_RESTORED]
    assert dom.hasManagedSaveImage(0) == 0
    assert disk_of(dom, "sda").find("source").get("file") == path
    raises(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_QEMU, dom.managedSaveGetXMLDesc, 0)


def test_managed_save_image_refuses_other_disks(lv: ModuleType, scratch: Scratch) -> None:
    dom = scratch.guest()
    dom.attachDeviceFlags(file_disk(scratch.disk_file()), lv.VIR_DOMAIN_AFFECT_LIVE)
    dom.managedSave(0)
    exc = raises(lv, lv.VIR_ERR_CONFIG_UNSUPPORTED, lv.VIR_FROM_DOMAIN,
                 dom.managedSaveDefineXML, dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE), 0)
    assert "Target domain disk count 0 does not match source 1" in str(exc)
    assert dom.managedSaveDefineXML(dom.managedSaveGetXMLDesc(0), 0) == 0
    raises(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_DOMAIN, dom.attachDeviceFlags,
           file_disk(scratch.disk_file(), "sdb"), lv.VIR_DOMAIN_AFFECT_LIVE)
    exc = raises(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_QEMU, dom.undefine)
    assert "managed save image exists" in str(exc)


def test_managed_save_refusals_and_remove(lv: ModuleType, scratch: Scratch) -> None:
    stopped = scratch.guest(running=False)
    raises(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_DOMAIN, stopped.managedSave, 0)
    for call, args in ((stopped.managedSaveGetXMLDesc, (0,)),
                       (stopped.managedSaveDefineXML, (guest_xml(stopped.name()), 0))):
        raises(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_QEMU, call, *args)
    raises(lv, lv.VIR_ERR_SYSTEM_ERROR, lv.VIR_FROM_QEMU, stopped.managedSaveRemove, 0)
    transient = scratch.guest(persistent=False)
    raises(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_QEMU, transient.managedSave, 0)
    assert transient.hasManagedSaveImage(0) == 0
    dom = scratch.guest()
    dom.managedSave(0)
    assert dom.managedSaveRemove(0) == 0
    assert (dom.hasManagedSaveImage(0), dom.isActive()) == (0, 0)
    assert dom.create() == 0
    assert dom.state() == [lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_BOOTED]


def test_list_all_domains_by_image_and_snapshot(lv: ModuleType, conn: Any,
                                                scratch: Scratch) -> None:
    saved, running, transient = scratch.guest(), scratch.guest(), scratch.guest(persistent=False)
    saved.managedSave(0)
    ours = {saved.name(), running.name(), transient.name()}
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE, ours) == {saved.name()}
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE, ours) == {
        running.name(), transient.name()}
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE
                 | lv.VIR_CONNECT_LIST_DOMAINS_PERSISTENT, ours) == {running.name()}
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_INACTIVE, ours) == {saved.name()}
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_TRANSIENT, ours) == {transient.name()}
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
                 | lv.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE, ours) == {saved.name()}
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, ours) == set()
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT, ours) == ours
    assert saved.listAllSnapshots(0) == []


def test_fake_refuses_filters_it_does_not_know() -> None:
    """A filter the fake would silently ignore must not pass for one it applied."""
    fakelibvirt.reset()
    try:
        fake = fakelibvirt.open()
        raises(fakelibvirt, fakelibvirt.VIR_ERR_NO_SUPPORT, fakelibvirt.VIR_FROM_DOMAIN,
               fake.listAllDomains, 16)  # VIR_CONNECT_LIST_DOMAINS_RUNNING
        both = (fakelibvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE
                | fakelibvirt.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE)
        fake.createXML("<domain><name>g</name></domain>", 0)
        assert [dom.name() for dom in fake.listAllDomains(both)] == ["g"]
    finally:
        fakelibvirt.reset()


# ---------------------------------------------------------------- snapshots

def snapshot_xml(name: str, overlay: str) -> str:
    return (f"<domainsnapshot><name>{name}</name><disks><disk name='sda' snapshot='external'>"
            f"<source file='{overlay}'/></disk></disks></domainsnapshot>")


def check_overlay(disk: Any, overlay: str, base: str, live: bool) -> None:
    """``disk`` has ``overlay`` on top and ``base`` as its backing store."""
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == overlay
    store = disk.find("backingStore")
    assert (store.get("type"), store.find("format").get("type")) == ("file", "raw")
    assert store.find("source").get("file") == base
    assert (store.get("index") is not None) == live
    assert (store.find("backingStore") is not None) == live  # the chain's end, live only


def test_disk_only_snapshot_puts_an_overlay_on_top(lv: ModuleType, conn: Any,
                                                   scratch: Scratch) -> None:
    dom, base = scratch.guest(), scratch.disk_file()
    dom.attachDeviceFlags(file_disk(base), lv.VIR_DOMAIN_AFFECT_LIVE | lv.VIR_DOMAIN_AFFECT_CONFIG)
    overlay = f"{base}.s1"
    scratch.paths += [overlay, f"{base}.again"]
    snap = dom.snapshotCreateXML(snapshot_xml("s1", overlay),
                                 lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
    assert snap.getName() == "s1" and [s.getName() for s in dom.listAllSnapshots(0)] == ["s1"]
    check_overlay(disk_of(dom, "sda"), overlay, base, live=True)
    check_overlay(disk_of(dom, "sda", lv.VIR_DOMAIN_XML_INACTIVE), overlay, base, live=False)
    meta = etree.fromstring(snap.getXMLDesc(0).encode())
    assert meta.findtext("state") == "disk-snapshot"
    assert meta.find("disks/disk[@name='sda']/source").get("file") == overlay
    assert meta.find("domain/devices/disk/source").get("file") == base
    assert names(conn, lv.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, {dom.name()}) == {dom.name()}
    raises(lv, lv.VIR_ERR_OPERATION_FAILED, lv.VIR_FROM_DOMAIN, dom.snapshotCreateXML,
           snapshot_xml("s1", f"{base}.again"), lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
    raises(lv, lv.VIR_ERR_NO_DOMAIN_SNAPSHOT, lv.VIR_FROM_QEMU, dom.snapshotLookupByName,
           "nope", 0)
    dom.destroy()
    exc = raises(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_QEMU, dom.undefine)
    assert "with 1 snapshots" in str(exc)
    assert snap.delete(lv.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY) == 0
    assert dom.listAllSnapshots(0) == []
    raises(lv, lv.VIR_ERR_NO_DOMAIN_SNAPSHOT, lv.VIR_FROM_QEMU, snap.getXMLDesc, 0)


# ---------------------------------------------------------------- secrets

def test_secret_keeps_description_flags_and_given_uuid(lv: ModuleType, conn: Any,
                                                       scratch: Scratch) -> None:
    usage, wanted = scratch.name(), str(uuid.uuid4())
    scratch.secret_uuids.add(wanted)
    secret = conn.secretDefineXML(
        f"<secret ephemeral='yes' private='yes'><uuid>{wanted}</uuid>"
        f"<description>hvplug-owned: CHAP &amp; more &lt;x&gt;</description>"
        f"<usage type='iscsi'><target>{usage}</target></usage></secret>")
    assert secret.UUIDString() == wanted
    root = etree.fromstring(secret.XMLDesc(0).encode())
    assert (root.get("ephemeral"), root.get("private")) == ("yes", "yes")
    assert [child.tag for child in root] == ["uuid", "description", "usage"]
    assert root.findtext("description") == "hvplug-owned: CHAP & more <x>"
    assert conn.secretLookupByUsage(lv.VIR_SECRET_USAGE_TYPE_ISCSI, usage).UUIDString() == wanted
    ephemeral = {s.UUIDString() for s in conn.listAllSecrets(
        lv.VIR_CONNECT_LIST_SECRETS_EPHEMERAL)}
    lasting = {s.UUIDString() for s in conn.listAllSecrets(
        lv.VIR_CONNECT_LIST_SECRETS_NO_EPHEMERAL)}
    assert wanted in ephemeral and wanted not in lasting


def test_secret_without_description_has_none(conn: Any, scratch: Scratch) -> None:
    secret = scratch.secret()
    root = etree.fromstring(secret.XMLDesc(0).encode())
    assert root.find("description") is None
    assert (root.get("ephemeral"), root.get("private")) == ("no", "no")
