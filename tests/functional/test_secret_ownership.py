"""Whose secret is it: hvplug changes and removes only the secrets it created.

An operator may have defined a secret for a volume's usage before hvplug
ever saw it (by hand, or with another tool), and other domains may use it.
hvplug uses such a secret as it is, only when it is persistent and only
after a login proved the credentials, and never changes or deletes it.
"""

import base64
import copy
import uuid
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from lxml import etree

from hvplug.virt.config import LibvirtConfigDeviceXML as DeviceXML
from tests.functional.helpers import (
    attach,
    detach,
    domblklist,
    host_initiator,
    run_cli,
    run_json,
    sessions,
    usage_secret,
    virsh,
    wait_for,
)

SECRETS_DIR = Path("/etc/libvirt/secrets")


def secret_xml(usage_id: str, ephemeral: bool = False, private: bool = True,
               description: str = "operator's own CHAP secret") -> str:
    """A secret as an operator defines it: no hvplug marker in its description."""
    yes_no = {True: "yes", False: "no"}
    return (f"<secret ephemeral='{yes_no[ephemeral]}' private='{yes_no[private]}'>"
            f"<uuid>{uuid.uuid4()}</uuid><description>{description}</description>"
            f"<usage type='iscsi'><target>{usage_id}</target></usage></secret>")


def operator_disk_xml(volume, dev: str = "sda", secret_uuid: str | None = None,
                      shareable: bool = False) -> str:
    """A network disk as an operator writes it; its secret by uuid, else by usage."""
    ref = (f"uuid={quoteattr(secret_uuid)}" if secret_uuid
           else f"usage={quoteattr(volume.usage_id)}")
    return (
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        f"<source protocol='iscsi' name={quoteattr(volume.usage_id)}>"
        "<host name='127.0.0.1' port='3260'/>"
        f"<initiator><iqn name={quoteattr(host_initiator())}/></initiator></source>"
        f"<auth username={quoteattr(volume.username)}><secret type='iscsi' {ref}/></auth>"
        f"<target dev='{dev}' bus='scsi'/>{'<shareable/>' if shareable else ''}</disk>")


def stored_value(uuid_: str) -> bytes:
    """The value libvirt keeps for a (private) secret, read as root from its file."""
    return base64.b64decode((SECRETS_DIR / f"{uuid_}.base64").read_bytes())


@pytest.fixture
def operator_secret(host):
    """Factory: a secret defined through libvirt as an operator would; undefined after."""
    made = []

    def make(usage_id: str, value: str | None, **kwargs):
        secret = host.define_secret_xml(secret_xml(usage_id, **kwargs))
        made.append(secret.UUIDString())
        if value is not None:
            secret.setValue(value.encode())
        return secret

    yield make
    for uuid_ in made:
        host.delete_secret(uuid_)


def test_operator_secret_used_by_another_domain(host, make_guest, make_volume,
                                                operator_secret):
    operator, guest = make_guest(), make_guest()
    volume = make_volume()
    volume["data"]["multiattach"] = True
    secret = operator_secret(volume.usage_id, volume.password)
    uuid_ = secret.UUIDString()
    dumped = virsh("secret-dumpxml", uuid_)
    host.attach_device(operator, DeviceXML(operator_disk_xml(volume, shareable=True)))
    assert domblklist(operator) == {"sda": volume.usage_id}

    result = attach(guest, volume)
    assert result["secret_uuid"] == uuid_
    disk = etree.fromstring(host.domain_xml(guest).encode()).find("./devices/disk")
    assert disk.find(".//auth/secret").get("uuid") == uuid_
    assert wait_for(lambda: len(sessions(volume.tid)) == 2), sessions(volume.tid)
    assert [s.UUIDString() for s in host.list_secrets()
            if s.usageID() == volume.usage_id] == [uuid_], "no second secret"

    detached = detach(guest, volume)
    assert detached["dev"] == result["dev"]
    assert domblklist(guest) == {}
    assert host.secret_exists(uuid_)
    assert virsh("secret-dumpxml", uuid_) == dumped
    assert stored_value(uuid_) == volume.password.encode()
    assert wait_for(lambda: len(sessions(volume.tid)) == 1), sessions(volume.tid)
    verified = run_json("verify", "--domain", operator)
    assert verified["ok"] and [d["dev"] for d in verified["disks"]] == ["sda"]
    assert domblklist(operator) == {"sda": volume.usage_id}


def test_detach_by_dev_keeps_the_operator_secret(host, make_guest, make_volume,
                                                 operator_secret, tmp_path):
    domain, volume = make_guest(), make_volume()
    secret = operator_secret(volume.usage_id, volume.password)
    uuid_ = secret.UUIDString()
    dumped = virsh("secret-dumpxml", uuid_)
    xml_file = tmp_path / "operator-disk.xml"
    xml_file.write_text(operator_disk_xml(volume, secret_uuid=uuid_))
    virsh("attach-device", domain, str(xml_file), "--live")
    assert domblklist(domain) == {"sda": volume.usage_id}

    detached = detach(domain, dev="sda")
    assert (detached["dev"], detached["live"]) == ("sda", True)
    assert domblklist(domain) == {}
    assert host.secret_exists(uuid_)
    assert virsh("secret-dumpxml", uuid_) == dumped
    assert stored_value(uuid_) == volume.password.encode()


def test_ephemeral_operator_secret_is_refused(host, make_guest, make_volume,
                                              operator_secret):
    domain, volume = make_guest(), make_volume()
    secret = operator_secret(volume.usage_id, "operator-value", ephemeral=True,
                             private=False)
    uuid_, before = secret.UUIDString(), secret.XMLDesc(0)

    rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi", info=volume)
    assert rc == 1, (out, err)
    assert "Traceback" not in err
    assert uuid_ in err and "ephemeral" in err
    assert f"virsh secret-undefine {uuid_}" in err and "ephemeral='no'" in err
    assert domblklist(domain) == {}
    assert host.secret_by_uuid(uuid_).XMLDesc(0) == before
    assert host.secret_by_uuid(uuid_).value() == b"operator-value"
    assert usage_secret(host, volume.usage_id).UUIDString() == uuid_


def test_wrong_password_leaves_a_foreign_secret_alone(host, make_guest, make_volume,
                                                      operator_secret):
    domain, volume = make_guest(), make_volume()
    secret = operator_secret(volume.usage_id, volume.password, private=False)
    uuid_, before = secret.UUIDString(), secret.XMLDesc(0)
    assert secret.value() == volume.password.encode()
    wrong = copy.deepcopy(volume)
    wrong["data"]["auth_password"] = "not-" + volume.password

    rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi", info=wrong)
    assert rc == 1, (out, err)
    assert "CHAP authentication failed" in err
    assert domblklist(domain) == {}
    assert host.secret_by_uuid(uuid_).value() == volume.password.encode()
    assert host.secret_by_uuid(uuid_).XMLDesc(0) == before
    assert usage_secret(host, volume.usage_id).UUIDString() == uuid_
    assert wait_for(lambda: not sessions(volume.tid)), sessions(volume.tid)


def test_hvplug_secret_is_recognisable(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    result = attach(domain, volume)
    secret = usage_secret(host, volume.usage_id)
    assert secret.UUIDString() == result["secret_uuid"]
    root = etree.fromstring(secret.XMLDesc(0).encode())
    assert root.findtext("description").startswith("hvplug-owned:")
    assert (root.get("private"), root.get("ephemeral")) == ("yes", "no")
    assert root.findtext("usage/target") == volume.usage_id
    with pytest.raises(host.libvirt.libvirtError):
        secret.value()  # private: libvirt never gives it back
    assert stored_value(result["secret_uuid"]) == volume.password.encode()

    detach(domain, volume)
    assert not host.secret_exists(result["secret_uuid"])
    assert not (SECRETS_DIR / f"{result['secret_uuid']}.base64").exists()
