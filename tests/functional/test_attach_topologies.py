"""Where a volume goes beyond one guest and one portal: shared volumes,
IPv6 and multiple portals, persistent domains."""

import copy

from lxml import etree

from hvplug.virt import guest_disks, secrets
from hvplug.virt.config import LibvirtConfigDeviceXML as DeviceXML
from hvplug.virt.volume.net import LibvirtNetVolumeDriver
from tests.functional.helpers import (
    attach,
    dead_port,
    detach,
    disk_element,
    domblklist,
    host_initiator,
    run_cli,
    run_json,
    sessions,
    usage_secret,
    wait_for,
)


def test_two_domains_share_a_volume(host, make_guest, make_volume):
    first, second = make_guest(), make_guest()
    volume = make_volume()
    volume["data"]["multiattach"] = True

    a = attach(first, volume)
    b = attach(second, volume)
    assert a["secret_uuid"] == b["secret_uuid"]
    for domain in (first, second):
        disk = disk_element(host.domain_xml(domain), "sda")
        assert disk.find("shareable") is not None
        assert domblklist(domain) == {"sda": volume.usage_id}
    assert wait_for(lambda: len(sessions(volume.tid)) == 2), sessions(volume.tid)
    ref = secrets.SecretRef(a["secret_uuid"], "iscsi", volume.usage_id)
    assert {user.domain for user in secrets.users(host, ref)} == {first, second}

    detach(first, volume)
    assert domblklist(first) == {}
    assert host.secret_exists(a["secret_uuid"]), "the second guest still uses it"
    assert wait_for(lambda: len(sessions(volume.tid)) == 1), sessions(volume.tid)
    assert domblklist(second) == {"sda": volume.usage_id}

    detach(second, volume)
    assert not host.secret_exists(a["secret_uuid"])
    assert wait_for(lambda: not sessions(volume.tid)), sessions(volume.tid)


def test_ipv6_portal(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume(portal="[::1]:3260")
    result = attach(domain, volume)
    assert result["portal"] == "[::1]:3260"

    disk = disk_element(host.domain_xml(domain), result["dev"])
    hosts = disk.findall("source/host")
    assert [(h.get("name"), h.get("port")) for h in hosts] == [("::1", "3260")]
    nexus = wait_for(lambda: sessions(volume.tid))
    assert [s.initiator for s in nexus] == [host_initiator()]
    assert any(":" in address for address in nexus[0].addresses), nexus

    listed = run_json("list", "--domain", domain)["volumes"]
    assert [(v["dev"], v["portal"]) for v in listed] == [(result["dev"], "[::1]:3260")]
    detach(domain, volume)
    assert domblklist(domain) == {}
    assert usage_secret(host, volume.usage_id) is None


def test_dead_first_portal_fails_over(host, make_guest, make_volume):
    domain, volume = make_guest(), make_volume()
    dead = f"127.0.0.1:{dead_port()}"
    info = copy.deepcopy(volume)
    info["data"].update(target_portal=dead, target_portals=[dead, "127.0.0.1:3260"],
                        target_iqns=[volume.iqn, volume.iqn], target_luns=[1, 1])

    result = attach(domain, info)
    assert result["portal"] == "127.0.0.1:3260"
    disk = disk_element(host.domain_xml(domain), result["dev"])
    assert disk.find("source/host").get("port") == "3260"
    assert wait_for(lambda: sessions(volume.tid))
    assert usage_secret(host, volume.usage_id).UUIDString() == result["secret_uuid"]

    # The same connection_info finds the disk again, whatever portal it used.
    detach(domain, info)
    assert domblklist(domain) == {}
    assert usage_secret(host, volume.usage_id) is None


def test_persistent_attach_and_detach(host, make_guest, make_volume):
    domain, volume = make_guest(persistent=True), make_volume()
    result = attach(domain, volume, "--persistent")
    dev, uuid = result["dev"], result["secret_uuid"]
    assert domblklist(domain) == {dev: volume.usage_id}
    assert domblklist(domain, inactive=True) == {dev: volume.usage_id}

    # Gone from the live domain only: the persistent configuration still
    # references the secret, so disconnecting must keep it.
    live_disk = guest_disks.disk_xml(host.domain_xml(domain), dev)
    host.detach_device(domain, DeviceXML(live_disk), dev, live=True, persistent=False)
    assert domblklist(domain) == {}
    users = secrets.users(host, secrets.SecretRef(uuid, "iscsi", volume.usage_id))
    assert [(u.domain, u.where) for u in users] == [(domain, "config")]
    driver = LibvirtNetVolumeDriver(host)
    driver.disconnect_volume(driver.connection_of(copy.deepcopy(volume)), domain)
    assert host.secret_exists(uuid)

    # hvplug detach finds it in the configuration and removes it there.
    detached = detach(domain, volume)
    assert (detached["dev"], detached["live"], detached["persistent"]) == (dev, False, True)
    assert domblklist(domain, inactive=True) == {}
    assert not host.secret_exists(uuid)

    # Attached to both again, one detach removes both.
    result = attach(domain, volume, "--persistent")
    detached = detach(domain, volume)
    assert (detached["live"], detached["persistent"]) == (True, True)
    assert domblklist(domain) == {} and domblklist(domain, inactive=True) == {}
    assert not host.secret_exists(result["secret_uuid"])
    assert wait_for(lambda: not sessions(volume.tid)), sessions(volume.tid)


def test_wrong_password_leaves_a_shared_secret_intact(host, make_guest, make_volume):
    """A rejected password must not replace the value other domains rely on."""
    first, second, third = make_guest(), make_guest(), make_guest()
    volume = make_volume()
    volume["data"]["multiattach"] = True
    a = attach(first, volume)

    wrong = copy.deepcopy(volume)
    wrong["data"]["auth_password"] = "not-the-password"
    rc, _out, err = run_cli("attach", "--domain", second, "--bus", "scsi", info=wrong)
    assert rc == 1 and "authentication failed" in err.lower()
    assert domblklist(second) == {}
    assert host.secret_exists(a["secret_uuid"])

    # The stored value is still the right one: libvirt can log a third guest
    # in with the secret as it stands, without hvplug touching it.
    disk = disk_element(host.domain_xml(first), "sda")
    for element in disk.findall("alias") + disk.findall("address"):
        disk.remove(element)
    xml = etree.tostring(disk, encoding="unicode")
    host.attach_device(third, DeviceXML(xml))
    assert domblklist(third) == {"sda": volume.usage_id}
    host.detach_device(third, DeviceXML(xml), "sda")
    detach(first, volume)
    assert not host.secret_exists(a["secret_uuid"])
