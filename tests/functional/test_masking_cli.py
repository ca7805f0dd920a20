"""Passwords are masked where they sit, never by searching the output for them.

A CHAP password of ``p``, ``e``, ``scsi`` or ``sda`` is a substring of
almost every line hvplug prints; output must still be intact (valid JSON,
XML equal to what a long password renders, error messages word for word),
and a long random password must appear nowhere.  tgtd accepts all of these
short passwords, and QEMU logs in with them, so every one goes through a
real attach / list / verify / detach.
"""

import contextlib
import functools
import json
import secrets
import uuid

import pytest
from lxml import etree

from hvplug.target.tgtd_ipc import TgtdError, TgtdIPC
from hvplug.virt import config
from hvplug.virt import secrets as hv_secrets
from tests.functional.helpers import (
    LIBVIRT_URI,
    domblklist,
    run_cli,
    run_json,
    sessions,
    usage_secret,
    wait_for,
)

PASSWORDS = ["p", "a", "1", "e", "iscsi", "type", "hvplug", "true", "sda", "scsi"]
LONG = "Lp0-" + secrets.token_urlsafe(24)
MASK = "***"
DRIVER = "hvplug.virt.volume.net.LibvirtNetVolumeDriver"
RENDER_IQN = "iqn.2010-10.org.openstack:volume-hvplug-test-render"
RENDER_USER = "hvplug-test-render-user"


def chap_info(iqn: str, user: str, password: str, serial: str = "render-1") -> dict:
    return {"driver_volume_type": "iscsi", "serial": serial,
            "data": {"target_portal": "127.0.0.1:3260", "target_iqn": iqn, "target_lun": 1,
                     "volume_id": serial, "auth_method": "CHAP", "auth_username": user,
                     "auth_password": password}}


def leaves(value):
    """Every key and scalar value of a parsed JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def normalised(xml: str) -> str:
    """Canonical XML with the (random) secret uuid replaced."""
    root = etree.fromstring(xml.encode())
    for ref in root.iter("secret"):
        if ref.get("uuid"):
            ref.set("uuid", "U")
    for element in root.iter("uuid"):
        element.text = "U"
    return etree.tostring(root, method="c14n").decode()


def render(password: str, json_output: bool) -> tuple[str, str | None]:
    """``hvplug render`` of the test volume: (disk XML, secret XML or JSON's value)."""
    info = chap_info(RENDER_IQN, RENDER_USER, password)
    rc, out, err = run_cli("render", "--bus", "scsi", *(["--json"] if json_output else []),
                           info=info)
    assert rc == 0 and err == "", (rc, out, err)
    if json_output:
        doc = json.loads(out)
        assert set(doc) == {"driver", "disk_xml", "secret_xml"}
        assert doc["driver"] == DRIVER
        return doc["disk_xml"], doc["secret_xml"]
    disk, marker, secret = out.partition("\n<secret")
    assert marker, out
    return disk, "<secret" + secret


@functools.cache
def reference(json_output: bool) -> tuple[str, str | None]:
    return render(LONG, json_output)


@pytest.mark.parametrize("password", PASSWORDS)
def test_render_json_disk_xml_is_intact(password):
    disk_xml, _ = render(password, json_output=True)
    assert MASK not in disk_xml
    disk = etree.fromstring(disk_xml.encode())
    assert disk.find("target").attrib == {"dev": "sda", "bus": "scsi"}
    assert disk.find("source").get("name") == f"{RENDER_IQN}/1"
    assert disk.find("source/auth").get("username") == RENDER_USER
    assert normalised(disk_xml) == normalised(reference(json_output=True)[0])


@pytest.mark.parametrize("password", PASSWORDS)
def test_render_text_disk_and_secret_are_intact(password):
    disk_xml, secret_xml = render(password, json_output=False)
    assert MASK not in disk_xml + secret_xml
    disk_ref, secret_ref = reference(json_output=False)
    assert normalised(disk_xml) == normalised(disk_ref)
    assert normalised(secret_xml) == normalised(secret_ref)
    # The pair fits together: the disk names the secret that was rendered.
    secret = etree.fromstring(secret_xml.encode())
    uuid_ = etree.fromstring(disk_xml.encode()).find("source/auth/secret").get("uuid")
    assert secret.findtext("uuid") == uuid_
    assert secret.find("usage/target").text == f"{RENDER_IQN}/1"


def test_render_json_secret_xml_is_the_xml():
    _, secret_xml = render("p", json_output=True)
    assert secret_xml != MASK
    assert normalised(secret_xml) == normalised(reference(json_output=False)[1])


@pytest.fixture
def chap_volume(make_volume):
    """Factory: a tgtd LUN whose CHAP account has the given password; (volume, info).

    Ask for it before ``make_guest``, so the guest (and its session) goes first.
    """
    ipc, bound = TgtdIPC(), []

    def make(password: str):
        volume = make_volume(size_mib=16, chap=False)
        user = f"hvplug-test-mask-{uuid.uuid4().hex[:8]}"
        ipc.new_account(user, password)
        bound.append((volume.tid, user))
        ipc.bind_account(volume.tid, user)
        return volume, chap_info(volume.iqn, user, password, serial=volume["serial"])

    yield make
    for tid, user in bound:
        with contextlib.suppress(TgtdError):
            ipc.unbind_account(tid, user)
        with contextlib.suppress(TgtdError):
            ipc.delete_account(user)


@pytest.mark.parametrize("password", PASSWORDS)
def test_attach_list_verify_detach_are_intact(host, chap_volume, make_guest, password):
    volume, info = chap_volume(password)
    domain = make_guest()
    rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi", "--json", info=info)
    assert rc == 0 and err == "", (rc, out, err)
    secret = usage_secret(host, volume.usage_id)
    assert secret is not None
    uuid_ = secret.UUIDString()
    assert json.loads(out) == {
        "domain": domain, "dev": "sda", "bus": "scsi", "driver": DRIVER,
        "secret_uuid": uuid_, "portal": "127.0.0.1:3260", "live": True,
        "persistent": False, "promoted": False}
    assert domblklist(domain) == {"sda": volume.usage_id}
    assert wait_for(lambda: sessions(volume.tid))  # QEMU logged in with this password

    assert run_json("list", "--domain", domain) == {"domain": domain, "volumes": [{
        "dev": "sda", "bus": "scsi", "layer": "source", "protocol": "iscsi",
        "source": volume.usage_id, "portal": "127.0.0.1:3260", "secret_uuid": uuid_,
        "secret_usage": None}]}
    rc, out, err = run_cli("list", "--domain", domain)
    assert rc == 0 and out.splitlines()[1].split() == [
        "sda", "source", "scsi", "iscsi", volume.usage_id, "127.0.0.1:3260", uuid_], out

    verified = run_json("verify", "--domain", domain)
    target_detail = (f"target {volume.iqn} answers, CHAP required; LUN 1 not checked "
                     "without the password (libvirt keeps it private)")
    assert verified == {"domain": domain, "ok": True, "disks": [{
        "dev": "sda", "layer": "source", "source": volume.usage_id, "ok": True, "checks": [
            {"check": "secret", "ok": True, "detail": f"secret {uuid_} exists"},
            {"check": "portal", "ok": True, "detail": "portal 127.0.0.1:3260 answers"},
            {"check": "target", "ok": True, "detail": target_detail}]}]}
    rc, out, err = run_cli("verify", "--domain", domain)
    assert rc == 0 and out == (f"sda: secret {uuid_} exists [ok]\n"
                               "sda: portal 127.0.0.1:3260 answers [ok]\n"
                               f"sda: {target_detail} [ok]\n"), out

    rc, out, err = run_cli("detach", "--domain", domain, "--json", info=info)
    assert rc == 0 and err == "", (rc, out, err)
    assert json.loads(out) == {"domain": domain, "dev": "sda", "driver": DRIVER, "live": True,
                               "persistent": False, "layer": "the source"}
    assert domblklist(domain) == {}
    assert usage_secret(host, volume.usage_id) is None
    assert wait_for(lambda: not sessions(volume.tid))


def not_found_message(domain: str) -> str:
    return (f"Domain '{domain}' not found on {LIBVIRT_URI}: domain missing. "
            "Check the name with 'virsh list --all'.")


@pytest.mark.parametrize("password", [*PASSWORDS, pytest.param(LONG, id="long-random")])
def test_domain_not_found_message_is_intact(host, password):
    missing = f"hvplug-test-missing-{uuid.uuid4().hex[:8]}"
    info = chap_info(RENDER_IQN, RENDER_USER, password)
    rc, out, err = run_cli("attach", "--domain", missing, "--bus", "scsi", "--json", info=info)
    assert rc == 1, (out, err)
    assert json.loads(out) == {"error": {"type": "DomainNotFound",
                                         "message": not_found_message(missing),
                                         "exit_code": 1}}
    assert err == f"hvplug: error: {not_found_message(missing)}\n"
    rc, out, err = run_cli("attach", "--domain", missing, info=info)
    assert (rc, out, err) == (1, "", f"hvplug: error: {not_found_message(missing)}\n")


@pytest.mark.parametrize("password", PASSWORDS)
def test_wrong_short_password_error_is_intact(host, make_volume, make_guest, password):
    """The target's account has a long password; the info carries a short, wrong one."""
    volume = make_volume(size_mib=16)
    domain = make_guest()
    info = chap_info(volume.iqn, volume.username, password, serial=volume["serial"])
    rc, out, err = run_cli("attach", "--domain", domain, "--bus", "scsi", "--json", info=info)
    message = (f"CHAP authentication failed: target {volume.usage_id} at 127.0.0.1:3260 "
               f"rejected user '{volume.username}'. Check auth_username/auth_password "
               "against the target's account.")
    assert rc == 1, (out, err)
    assert json.loads(out) == {"error": {"type": "AuthenticationFailed", "message": message,
                                         "exit_code": 1}}
    assert err == f"hvplug: error: {message}\n"
    assert domblklist(domain) == {}
    assert usage_secret(host, volume.usage_id) is None


def test_long_password_is_never_printed(host, make_volume, make_guest):
    volume = make_volume(size_mib=16)
    domain, password = make_guest(), volume.password
    wrong = dict(volume, data={**volume["data"], "auth_password": LONG})
    runs = {  # in this order
        "render --json": run_cli("render", "--json", info=volume),
        "render": run_cli("render", info=volume),
        "attach wrong": run_cli("--debug", "attach", "--domain", domain, "--json", info=wrong),
        "attach": run_cli("--debug", "attach", "--domain", domain, "--bus", "scsi", "--json",
                          info=volume),
        "list": run_cli("list", "--domain", domain, "--json"),
        "verify": run_cli("verify", "--domain", domain, "--json"),
        "attach again": run_cli("attach", "--domain", domain, "--json", info=volume),
        "detach": run_cli("--debug", "detach", "--domain", domain, "--json", info=volume),
        "missing domain": run_cli("--debug", "attach", "--domain", f"{domain}-gone", "--json",
                                  info=volume),
    }
    for name, (_, out, err) in runs.items():
        assert password not in out + err, name
        assert LONG not in out + err, name
        if name != "render":
            assert password not in list(leaves(json.loads(out))), name
    assert [rc for rc, _, _ in runs.values()] == [0, 0, 1, 0, 0, 0, 1, 0, 1]
    # Where the password would show (the --debug log of the connection_info),
    # it is masked under its key.
    assert "'auth_password': '***'" in runs["attach"][2]
    assert json.loads(runs["attach wrong"][1])["error"]["type"] == "AuthenticationFailed"
    assert json.loads(runs["attach again"][1])["error"]["type"] == "VolumeAlreadyAttached"
    assert domblklist(domain) == {}
    assert usage_secret(host, volume.usage_id) is None


@pytest.fixture
def orphan_secret(host):
    """An hvplug-owned secret nothing uses, as a killed attach leaves it; its uuid."""
    usage = f"iqn.2010-10.org.openstack:volume-hvplug-test-{uuid.uuid4().hex[:8]}/1"
    conf = config.LibvirtConfigSecret(
        ephemeral=False, private=True, description=hv_secrets.owned_description(usage),
        usage_type="iscsi", usage_id=usage)
    secret = host.define_secret_xml(conf.to_xml())
    yield secret.UUIDString(), usage
    with contextlib.suppress(host.libvirt.libvirtError):
        secret.undefine()


def test_reconcile_text_names_the_orphan(orphan_secret):
    uuid_, usage = orphan_secret
    rc, out, err = run_cli("reconcile", "--dry-run")
    assert rc == 1 and "Traceback" not in err, (out, err)
    assert f"orphan secret {uuid_} [{usage}]: would remove: " in out, out


def test_reconcile_json_names_the_orphan(orphan_secret):
    """Its uuid is a name, not a secret: printed as it is (key ``secret_uuid``)."""
    uuid_, usage = orphan_secret
    rc, out, err = run_cli("reconcile", "--dry-run", "--json")
    assert rc == 1 and "Traceback" not in err, (out, err)
    mine = [f for f in json.loads(out)["findings"] if f["source"] == usage]
    assert [(f["kind"], f["secret_uuid"], f["secret_usage"], f["action"]) for f in mine] == [
        ("orphan-secret", uuid_, usage, "would remove")]
