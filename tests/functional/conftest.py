"""Fixtures of the functional tests: real libvirtd + QEMU guests, real tgtd targets.

Other test runs share these daemons, so every guest, target, account,
secret and file made here has a unique name, and only what was made here is
removed.  Cleanup runs even when a test fails; fixture order makes guests go
first (ending their iSCSI sessions), then targets, accounts and secrets.
"""

import contextlib
import random
import secrets
import uuid

import pytest

from hvplug import templates
from hvplug.target.tgtd_ipc import TgtdError, TgtdIPC
from hvplug.virt.host import Host
from tests import stack
from tests.functional.helpers import LIBVIRT_URI, QEMU_LOG_DIR

IQN_PREFIX = "iqn.2010-10.org.openstack:volume-hvplug-test-"


def unique_hex() -> str:
    return uuid.uuid4().hex[:8]


class VolumeInfo(dict):
    """A Cinder-style connection_info, plus what the test side knows of the export.

    ``tid``, ``iqn``, ``lun``, ``path`` (backing file), ``size`` (bytes),
    ``username`` and ``password`` are attributes, so ``json.dumps`` of the
    dict is exactly the connection_info.
    """

    @property
    def usage_id(self) -> str:
        return f"{self.iqn}/{self.lun}"


@pytest.fixture
def host():
    stack.require_libvirtd()
    host = Host(LIBVIRT_URI)
    yield host
    host.close()


@pytest.fixture
def make_volume(host, tmp_path):
    """Factory: a tgtd target with one LUN, exported with CHAP; its connection_info."""
    made = []
    ipc = TgtdIPC()

    def make(size_mib: int = 64, chap: bool = True, acl_initiator: str | None = None,
             portal: str = "127.0.0.1:3260") -> VolumeInfo:
        stack.require_tgtd()
        hexid = unique_hex()
        iqn = IQN_PREFIX + hexid
        path = tmp_path / f"volume-{hexid}.img"
        with open(path, "wb") as backing:
            backing.truncate(size_mib << 20)
        volume = {"iqn": iqn, "path": path, "tid": None, "user": None}
        made.append(volume)
        volume["tid"] = ipc.new_target(None, iqn, start=random.randint(1000, 20000))
        ipc.new_lun(volume["tid"], 1, str(path))
        user = password = None
        if chap:
            user, password = f"hvplug-test-{hexid}", secrets.token_urlsafe(16)
            ipc.new_account(user, password)
            volume["user"] = user
            ipc.bind_account(volume["tid"], user)
        if acl_initiator:
            ipc.bind_initiator(volume["tid"], name=acl_initiator)
        else:
            ipc.bind_initiator(volume["tid"], address="ALL")
        data = {"target_portal": portal, "target_iqn": iqn, "target_lun": 1,
                "target_discovered": False, "volume_id": hexid, "access_mode": "rw"}
        if chap:
            data.update(auth_method="CHAP", auth_username=user, auth_password=password)
        info = VolumeInfo(driver_volume_type="iscsi", data=data, serial=hexid)
        info.tid, info.iqn, info.lun, info.path = volume["tid"], iqn, 1, path
        info.size, info.username, info.password = size_mib << 20, user, password
        return info

    yield make
    for volume in reversed(made):
        if volume["tid"] is not None:
            with contextlib.suppress(TgtdError):
                ipc.delete_target(volume["tid"], force=True)
        if volume["user"]:
            with contextlib.suppress(TgtdError):
                ipc.delete_account(volume["user"])
        with contextlib.suppress(host.libvirt.libvirtError):
            secret = host.find_secret("iscsi", f"{volume['iqn']}/1")
            if secret is not None:
                secret.undefine()
        volume["path"].unlink(missing_ok=True)


@pytest.fixture
def make_guest(host, make_volume):
    """Factory: a running diskless guest, transient or persistent; its name.

    It depends on ``make_volume`` only so that guests are torn down before
    the targets they are logged in to.
    """
    libvirt = host.libvirt
    made = []
    domain_type = None

    def make(persistent: bool = False) -> str:
        nonlocal domain_type
        domain_type = domain_type or host.guest_domain_type()
        name = f"hvplug-test-{unique_hex()}"
        xml = templates.guest_xml(name, domain_type=domain_type)
        conn = host.connection()
        made.append(name)
        if persistent:
            conn.defineXML(xml).create()
        else:
            conn.createXML(xml, 0)
        return name

    yield make
    for name in reversed(made):
        with contextlib.suppress(libvirt.libvirtError):
            dom = host.connection().lookupByName(name)
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        (QEMU_LOG_DIR / f"{name}.log").unlink(missing_ok=True)
