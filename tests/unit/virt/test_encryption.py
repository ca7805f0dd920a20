"""Encrypted volumes (QEMU's native LUKS) on the fake libvirt: the key
sources, the passphrase secret's life (define, share, roll back, release),
the disk's <encryption>, render, bulk and the CLI."""

import copy
import itertools
import json
import logging
import os
import uuid as uuidlib

import pytest
from lxml import etree

from hvplug import exception
from hvplug.virt import attach, bulk, config, encryption, guest_disks, secrets
from tests import xmlcheck

PASSPHRASE = b"unit-LUKS-passphrase-7c1e"
WRONG_KEY = "Invalid password, cannot unlock any keyslot"
NOT_LUKS = "Volume is not in LUKS format"


def secret_state(fake_libvirt, uuid):
    return fake_libvirt._hosts["qemu:///system"].secrets.get(uuid)


def all_secrets(host):
    return {s.UUIDString(): (s.usageType(), s.usageID())
            for s in host.call(lambda conn: conn.listAllSecrets())}


def live_disk(host, domain, dev):
    return {d.target_dev: d for d in guest_disks.disks(host.domain_xml(domain))}.get(dev)


def disk_element(host, domain, dev):
    root = etree.fromstring(host.domain_xml(domain).encode())
    return root.xpath("./devices/disk[target/@dev=$dev]", dev=dev)[0]


def assert_valid_volume_secret(xml: str) -> None:
    """secret.rng wants an absolute path as a volume usage; hvplug (as Nova)
    keys the passphrase secret by the volume id, which libvirt's parser
    takes.  Like the iSCSI slash in ``xmlcheck.assert_valid_secret``, that
    one gap is bridged and everything else is checked."""
    root = etree.fromstring(xml.encode())
    for volume in root.xpath("./usage[@type='volume']/volume"):
        volume.text = "/" + (volume.text or "")
    xmlcheck.assert_valid_secret(etree.tostring(root, encoding="unicode"))


@pytest.fixture
def encrypted_info(make_info):
    def make(chap: bool = True, **data) -> dict:
        return make_info(chap=chap, encrypted=True, **data)
    return make


@pytest.fixture
def key_dir(tmp_path, config_fixture):
    path = tmp_path / "keys"
    path.mkdir(mode=0o700)
    config_fixture.config(group="libvirt", volume_key_dir=str(path))

    def put(volume_id: str, value: bytes = PASSPHRASE, mode: int = 0o600):
        key = path / volume_id
        key.write_bytes(value)
        key.chmod(mode)
        return key
    put.path = path
    return put


def private_file(tmp_path, value: bytes = PASSPHRASE, mode: int = 0o600, name="pass"):
    path = tmp_path / name
    path.write_bytes(value)
    path.chmod(mode)
    return path


# -- where the passphrase comes from ---------------------------------------------

def test_plain_volume_needs_no_passphrase_and_refuses_one(make_info):
    info = make_info()
    assert encryption.passphrase_for(info, None) is None
    with pytest.raises(exception.PassphraseNotNeeded) as err:
        encryption.passphrase_for(info, PASSPHRASE)
    assert err.value.exit_code == exception.EXIT_BAD_INPUT
    assert info["serial"] in err.value.message and "--passphrase-file" in err.value.message
    with pytest.raises(exception.PassphraseNotNeeded):
        encryption.passphrase_for(make_info(encrypted=False), PASSPHRASE)


def test_encrypted_volume_without_a_key_names_both_ways(encrypted_info):
    info = encrypted_info()
    with pytest.raises(exception.PassphraseMissing) as err:
        encryption.passphrase_for(info, None)
    assert err.value.exit_code == exception.EXIT_BAD_INPUT
    message = err.value.message
    assert "--passphrase-file" in message and "[libvirt] volume_key_dir" in message
    assert info["serial"] in message and "Nothing was changed" in message


def test_given_passphrase_wins_over_the_key_dir(encrypted_info, key_dir):
    info = encrypted_info()
    key_dir(info["serial"], b"from-the-dir")
    key = encryption.passphrase_for(info, PASSPHRASE)
    assert (key.value, key.source) == (PASSPHRASE, "the passphrase given")
    log_style = "%s" % (key,)  # noqa: UP031 - as logging formats its arguments
    for shown in (repr(key), str(key), f"{key}", log_style, repr([key])):
        assert PASSPHRASE.decode() not in shown


def test_key_dir_file_named_by_serial_else_volume_id(encrypted_info, key_dir):
    info = encrypted_info()
    path = key_dir(info["serial"])
    key = encryption.passphrase_for(info, None)
    assert (key.value, key.source) == (PASSPHRASE, str(path))
    del info["serial"]
    info["data"]["volume_id"] = "vol-by-data"
    key_dir("vol-by-data", b"other")
    assert encryption.passphrase_for(info, None).value == b"other"


def test_key_dir_without_the_volumes_file(encrypted_info, key_dir):
    info = encrypted_info()
    with pytest.raises(exception.PassphraseKeyFileMissing) as err:
        encryption.passphrase_for(info, None)
    assert err.value.exit_code == exception.EXIT_BAD_INPUT
    assert str(key_dir.path / info["serial"]) in err.value.message
    assert "--passphrase-file" in err.value.message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620])
def test_key_file_others_may_use_is_refused(encrypted_info, key_dir, mode):
    info = encrypted_info()
    key_dir(info["serial"], mode=mode)
    with pytest.raises(exception.PassphraseFileUnsafe) as err:
        encryption.passphrase_for(info, None)
    assert err.value.exit_code == exception.EXIT_BAD_INPUT
    assert f"{mode:04o}" in err.value.message and "chmod 600" in err.value.message
    assert PASSPHRASE.decode() not in err.value.message


def test_relative_key_dir_is_a_configuration_error(encrypted_info, config_fixture):
    config_fixture.config(group="libvirt", volume_key_dir="keys")
    with pytest.raises(exception.ConfigFileError) as err:
        encryption.passphrase_for(encrypted_info(), None)
    assert "volume_key_dir" in err.value.message and err.value.exit_code == 2


@pytest.mark.parametrize("serial", ["..", "."])
def test_volume_id_that_is_no_file_name(encrypted_info, key_dir, serial):
    info = encrypted_info()
    info["serial"] = serial
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        encryption.passphrase_for(info, None)
    assert "volume_key_dir" in err.value.message


def test_volume_id_with_a_slash(encrypted_info, key_dir):
    info = encrypted_info()
    del info["serial"]
    info["data"]["volume_id"] = "../../etc/shadow"
    with pytest.raises(exception.InvalidConnectionInfo):
        encryption.passphrase_for(info, None)


def test_encrypted_volume_needs_a_volume_id(encrypted_info):
    info = encrypted_info()
    del info["serial"], info["data"]["volume_id"]
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        encryption.passphrase_for(info, PASSPHRASE)
    assert "serial or data.volume_id" in err.value.message


def test_empty_passphrase_is_refused(encrypted_info):
    with pytest.raises(exception.InvalidInput):
        encryption.passphrase_for(encrypted_info(), b"")


def test_encrypted_lun_passthrough_is_refused(encrypted_info):
    with pytest.raises(exception.InvalidInput) as err:
        encryption.passphrase_for(encrypted_info(), PASSPHRASE, device="lun")
    assert "device 'lun'" in err.value.message


# -- the passphrase file ----------------------------------------------------------

def test_file_is_read_byte_for_byte(tmp_path, caplog):
    raw = b"\x00bin\xffary  "
    assert encryption.read_passphrase_file(str(private_file(tmp_path, raw))) == raw
    with caplog.at_level(logging.WARNING):
        value = encryption.read_passphrase_file(str(private_file(tmp_path, PASSPHRASE + b"\n")))
    assert value == PASSPHRASE + b"\n"
    assert "ends with a newline" in caplog.text
    assert PASSPHRASE.decode() not in caplog.text


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "it is empty"),
    (b"x" * (encryption.MAX_PASSPHRASE + 1), "more than 65536 bytes"),
])
def test_empty_or_huge_file_is_refused(tmp_path, content, reason):
    with pytest.raises(exception.PassphraseFileUnreadable) as err:
        encryption.read_passphrase_file(str(private_file(tmp_path, content)))
    assert reason in err.value.message and err.value.exit_code == 2


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(exception.PassphraseFileUnreadable) as err:
        encryption.read_passphrase_file(str(tmp_path / "nope"))
    assert "No such file" in err.value.message and "--passphrase-file" in err.value.message
    with pytest.raises(exception.PassphraseFileUnreadable) as err:
        encryption.read_passphrase_file(str(tmp_path))
    assert "directory" in err.value.message.lower()


def test_world_readable_file_is_refused(tmp_path):
    path = private_file(tmp_path, mode=0o644)
    with pytest.raises(exception.PassphraseFileUnsafe) as err:
        encryption.read_passphrase_file(str(path))
    assert "open to its group and others" in err.value.message
    assert "0644" in err.value.message


def test_a_pipe_is_read(tmp_path):
    read_end, write_end = os.pipe()
    os.write(write_end, PASSPHRASE)
    os.close(write_end)
    try:
        assert encryption.read_passphrase_file(f"/proc/self/fd/{read_end}") == PASSPHRASE
    finally:
        os.close(read_end)


# -- attach and detach -------------------------------------------------------------

def test_attach_encrypted_chap_volume(host, registry, guest, encrypted_info, fake_libvirt):
    info = encrypted_info()
    result = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi",
                                  passphrase=PASSPHRASE)
    passphrase_secret = host.find_secret("volume", info["serial"])
    assert passphrase_secret is not None
    chap_secret = host.find_secret("iscsi", f"{info['data']['target_iqn']}/1")
    assert chap_secret.UUIDString() == result.secret_uuid
    assert passphrase_secret.UUIDString() != result.secret_uuid

    disk = live_disk(host, guest, result.dev)
    assert (disk.encryption_format, disk.encryption_secret_type) == ("luks", "passphrase")
    assert disk.encryption_secret_uuid == passphrase_secret.UUIDString()
    assert disk.auth_secret_uuid == result.secret_uuid
    element = disk_element(host, guest, result.dev)
    assert element.find("source/encryption") is not None  # libvirt's modern place
    assert element.find("encryption") is None

    conf = secrets.read_config(passphrase_secret)
    assert secrets.is_owned(conf) and conf.private and not conf.ephemeral
    assert conf.description == f"hvplug-owned: LUKS passphrase of volume {info['serial']}"
    assert secret_state(fake_libvirt, conf.uuid or passphrase_secret.UUIDString()
                        ).value == PASSPHRASE
    with pytest.raises(fake_libvirt.libvirtError):
        passphrase_secret.value()  # private
    assert_valid_volume_secret(passphrase_secret.XMLDesc())

    detached = attach.detach_volume(host, registry, guest, connection_info=info)
    assert detached.dev == result.dev
    assert all_secrets(host) == {}


def test_detach_by_dev_releases_both_secrets(host, registry, guest, encrypted_info):
    info = encrypted_info()
    result = attach.attach_volume(host, registry, guest, info, bus="scsi",
                                  passphrase=PASSPHRASE)
    assert len(all_secrets(host)) == 2
    attach.detach_volume(host, registry, guest, dev=result.dev)
    assert all_secrets(host) == {}


def test_attach_from_the_key_dir_without_chap(host, registry, guest, encrypted_info,
                                              key_dir, fake_libvirt):
    info = encrypted_info(chap=False)
    key_dir(info["serial"], b"dir-key")
    result = attach.attach_volume(host, registry, guest, info, bus="scsi")
    assert result.secret_uuid is None
    [(uuid, usage)] = all_secrets(host).items()
    assert usage == (fake_libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, info["serial"])
    assert secret_state(fake_libvirt, uuid).value == b"dir-key"
    assert live_disk(host, guest, result.dev).encryption_secret_uuid == uuid
    attach.detach_volume(host, registry, guest, connection_info=info)
    assert all_secrets(host) == {}


def test_refused_without_a_key_before_anything_is_touched(
        host, registry, guest, encrypted_info, fake_libvirt, iscsi_target, lock_path):
    logins = []
    fake_libvirt.set_iscsi_login(lambda *args: logins.append(args))
    before = host.domain_xml(guest)
    with pytest.raises(exception.PassphraseMissing):
        attach.attach_volume(host, registry, guest, encrypted_info(), bus="scsi")
    assert host.domain_xml(guest) == before
    assert all_secrets(host) == {} and logins == []
    assert iscsi_target.connections == 0  # not even the portal probe ran
    assert not lock_path.exists() or not any(lock_path.iterdir())


def test_wrong_passphrase_leaves_nothing(host, registry, guest, encrypted_info, fake_libvirt):
    def login(*args):
        raise RuntimeError(WRONG_KEY)
    fake_libvirt.set_iscsi_login(login)
    info = encrypted_info()
    with pytest.raises(exception.PassphraseRejected) as err:
        attach.attach_volume(host, registry, guest, info, bus="scsi", passphrase=b"wrong")
    assert err.value.exit_code == exception.EXIT_FAILED
    message = err.value.message
    assert info["serial"] in message and guest in message and WRONG_KEY in message
    assert "Nothing was left behind." in message and "wrong" not in message.split("(")[0]
    assert all_secrets(host) == {} and live_disk(host, guest, "sda") is None


def test_volume_without_a_luks_header(host, registry, guest, encrypted_info, fake_libvirt):
    def login(*args):
        raise RuntimeError(NOT_LUKS)
    fake_libvirt.set_iscsi_login(login)
    with pytest.raises(exception.NotALuksVolume) as err:
        attach.attach_volume(host, registry, guest, encrypted_info(), bus="scsi",
                             passphrase=PASSPHRASE)
    assert "no LUKS header" in err.value.message
    assert all_secrets(host) == {}


def test_plain_volume_failure_is_not_blamed_on_a_passphrase(host, registry, guest,
                                                             make_info, fake_libvirt):
    def login(*args):
        raise RuntimeError(WRONG_KEY)  # whatever QEMU says, a plain volume has no key
    fake_libvirt.set_iscsi_login(login)
    with pytest.raises(exception.AttachFailed):
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")


def test_failure_after_the_secret_rolls_it_back(host, registry, guest, encrypted_info,
                                                 monkeypatch):
    def refuse(*args, **kwargs):
        raise exception.LibvirtError(action="attach", reason="test")
    monkeypatch.setattr(host, "attach_device", refuse)
    with pytest.raises(exception.LibvirtError):
        attach.attach_volume(host, registry, guest, encrypted_info(), bus="scsi",
                             passphrase=PASSPHRASE)
    assert all_secrets(host) == {}


def test_rollback_that_cannot_remove_the_secret_says_so(host, registry, guest,
                                                        encrypted_info, monkeypatch):
    def refuse(*args, **kwargs):
        raise exception.LibvirtError(action="attach", reason="test")
    monkeypatch.setattr(host, "attach_device", refuse)
    real = encryption.release_passphrase_secret

    def broken(host_, uuid):
        raise exception.LibvirtError(action="undefine the secret", reason="daemon gone")
    monkeypatch.setattr(encryption, "release_passphrase_secret", broken)
    with pytest.raises(exception.RollbackIncomplete) as err:
        attach.attach_volume(host, registry, guest, encrypted_info(), bus="scsi",
                             passphrase=PASSPHRASE)
    assert "passphrase secret" in err.value.message and "daemon gone" in err.value.message
    monkeypatch.setattr(encryption, "release_passphrase_secret", real)


def test_shared_volume_keeps_its_secret_and_value(host, registry, make_guest,
                                                  encrypted_info, fake_libvirt):
    one, two = make_guest(), make_guest()
    info = encrypted_info(chap=False, multiattach=True)
    attach.attach_volume(host, registry, one, copy.deepcopy(info), bus="scsi",
                         passphrase=PASSPHRASE)
    uuid = host.find_secret("volume", info["serial"]).UUIDString()
    # A second attach with another passphrase: the secret the first domain
    # opened the volume with keeps its value (a wrong one would lock it out).
    attach.attach_volume(host, registry, two, copy.deepcopy(info), bus="scsi",
                         passphrase=b"another")
    assert secret_state(fake_libvirt, uuid).value == PASSPHRASE
    assert live_disk(host, two, "sda").encryption_secret_uuid == uuid
    attach.detach_volume(host, registry, one, connection_info=info)
    assert host.secret_exists(uuid)
    attach.detach_volume(host, registry, two, connection_info=info)
    assert not host.secret_exists(uuid)


def test_unused_own_secret_takes_the_new_value(host, registry, guest, encrypted_info,
                                               fake_libvirt):
    info = encrypted_info()
    conf = encryption.secret_config(info)
    stale = host.define_secret_xml(conf.to_xml())
    stale.setValue(b"old")
    attach.attach_volume(host, registry, guest, info, bus="scsi", passphrase=PASSPHRASE)
    assert secret_state(fake_libvirt, stale.UUIDString()).value == PASSPHRASE


def foreign_secret(host, volume_id: str, ephemeral: bool = False):
    xml = (f"<secret ephemeral='{'yes' if ephemeral else 'no'}' private='yes'>"
           "<description>the operator's</description>"
           f"<usage type='volume'><volume>{volume_id}</volume></usage></secret>")
    secret = host.define_secret_xml(xml)
    secret.setValue(b"theirs")
    return secret


def test_foreign_secret_is_used_as_is_and_kept(host, registry, guest, encrypted_info,
                                               fake_libvirt):
    info = encrypted_info()
    theirs = foreign_secret(host, info["serial"])
    attach.attach_volume(host, registry, guest, info, bus="scsi", passphrase=PASSPHRASE)
    assert live_disk(host, guest, "sda").encryption_secret_uuid == theirs.UUIDString()
    assert secret_state(fake_libvirt, theirs.UUIDString()).value == b"theirs"
    attach.detach_volume(host, registry, guest, connection_info=info)
    assert host.secret_exists(theirs.UUIDString())


def test_foreign_ephemeral_secret_is_refused(host, registry, guest, encrypted_info):
    info = encrypted_info()
    theirs = foreign_secret(host, info["serial"], ephemeral=True)
    with pytest.raises(exception.ForeignSecretUnusable) as err:
        attach.attach_volume(host, registry, guest, info, bus="scsi", passphrase=PASSPHRASE)
    assert f"(usage volume '{info['serial']}')" in err.value.message
    assert set(all_secrets(host)) == {theirs.UUIDString()}  # the CHAP one rolled back


def test_legacy_disk_level_encryption_is_read_and_released(host, registry, guest,
                                                           encrypted_info):
    """Nova writes <encryption> as a child of <disk>; such a disk is detached
    with its passphrase secret released just the same."""
    info = encrypted_info(chap=False)
    secret = host.define_secret_xml(encryption.secret_config(info).to_xml())
    secret.setValue(PASSPHRASE)
    data = info["data"]
    xml = (f"<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
           f"<source protocol='iscsi' name='{data['target_iqn']}/1'>"
           f"<host name='127.0.0.1' port='3260'/></source>"
           f"<encryption format='luks'><secret type='passphrase' "
           f"uuid='{secret.UUIDString()}'/></encryption>"
           f"<target dev='sdc' bus='scsi'/><serial>{info['serial']}</serial></disk>")
    disk = config.LibvirtConfigGuestDisk.from_xml(xml)
    assert (disk.encryption_format, disk.encryption_secret_uuid) == (
        "luks", secret.UUIDString())
    host.attach_device(guest, config.LibvirtConfigDeviceXML(xml), live=True, persistent=False)
    assert secrets.users(host, secrets.SecretRef.of(secrets.read_config(secret)))
    attach.detach_volume(host, registry, guest, dev="sdc")
    assert not host.secret_exists(secret.UUIDString())


def test_a_disk_naming_the_secret_by_usage_is_a_user(host, guest, encrypted_info):
    info = encrypted_info(chap=False)
    conf = encryption.secret_config(info)
    conf.uuid = str(uuidlib.uuid4())
    ref = secrets.SecretRef.of(conf)
    xml = (f"<domain><devices><disk><source><encryption format='luks'>"
           f"<secret type='passphrase' usage='{info['serial']}'/></encryption></source>"
           f"<target dev='vdb'/></disk></devices></domain>")
    assert secrets.references(xml, ref) == ["vdb"]
    # A CHAP secret of the same id is not this one: the reference's type differs.
    chap = secrets.SecretRef(None, "iscsi", info["serial"])
    assert secrets.references(xml, chap) == []


def test_promotion_of_an_encrypted_volume(host, registry, make_guest, encrypted_info):
    guest = make_guest(persistent=True)
    info = encrypted_info(chap=False)
    result = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi",
                                  passphrase=PASSPHRASE)
    uuid = host.find_secret("volume", info["serial"]).UUIDString()
    promoted = attach.attach_volume(host, registry, guest, copy.deepcopy(info), bus="scsi",
                                    persistent=True, passphrase=PASSPHRASE)
    assert promoted.promoted and promoted.dev == result.dev
    root = etree.fromstring(host.domain_xml(guest, inactive=True).encode())
    [disk] = root.xpath("./devices/disk[target/@dev=$dev]", dev=result.dev)
    assert disk.find("source/encryption/secret").get("uuid") == uuid
    attach.detach_volume(host, registry, guest, connection_info=info)
    assert all_secrets(host) == {}


# -- render --------------------------------------------------------------------------

FIXED_UUIDS = ["6a1f2b9e-3c4d-4e5f-8a7b-0c1d2e3f4a5b", "0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f"]


@pytest.fixture
def fixed_uuids(monkeypatch):
    given = itertools.cycle(FIXED_UUIDS)
    monkeypatch.setattr(attach, "new_uuid", lambda: next(given))


def golden_info(encrypted_info):
    info = encrypted_info()
    info["data"].update(target_portal="192.0.2.10:3260", volume_id="volume-luks",
                        target_iqn="iqn.2010-10.org.openstack:volume-luks",
                        auth_username="user-luks")
    info["serial"] = "volume-luks"
    return info


def test_render_gives_both_secrets(registry, encrypted_info, fixed_uuids):
    rendered = attach.render(registry, golden_info(encrypted_info), bus="scsi")
    chap_uuid, passphrase_uuid = FIXED_UUIDS
    xmlcheck.assert_valid_disk(rendered.disk_xml)
    xmlcheck.assert_valid_secret(rendered.secret_xml)
    assert_valid_volume_secret(rendered.encryption_secret_xml)
    xmlcheck.assert_golden(rendered.disk_xml, "virt/render_iscsi_luks_disk.xml")
    xmlcheck.assert_golden(rendered.encryption_secret_xml,
                           "virt/render_iscsi_luks_passphrase_secret.xml")
    disk = config.LibvirtConfigGuestDisk.from_xml(rendered.disk_xml)
    assert (disk.auth_secret_uuid, disk.encryption_secret_uuid) == (chap_uuid, passphrase_uuid)
    assert PASSPHRASE.decode() not in rendered.encryption_secret_xml
    # The old three values stay what they were.
    _, disk_xml, secret_xml = attach.render_volume(registry, golden_info(encrypted_info))
    assert "<encryption" in disk_xml and "<usage type=\"iscsi\">" in secret_xml


def test_render_of_a_plain_volume_has_no_passphrase_secret(registry, make_info):
    rendered = attach.render(registry, make_info())
    assert rendered.encryption_secret_xml is None and "<encryption" not in rendered.disk_xml


# -- bulk ------------------------------------------------------------------------------

def test_bulk_refuses_one_passphrase_for_several(host, registry, guest, encrypted_info):
    with pytest.raises(exception.InvalidInput) as err:
        bulk.attach_volumes(host, registry, guest, [encrypted_info(), encrypted_info()],
                            bus="scsi", passphrase=PASSPHRASE)
    assert "volume_key_dir" in err.value.message
    assert all_secrets(host) == {}


def test_bulk_with_one_volume_takes_the_passphrase(host, registry, guest, encrypted_info):
    [outcome] = bulk.attach_volumes(host, registry, guest, [encrypted_info()], bus="scsi",
                                    passphrase=PASSPHRASE)
    assert outcome.ok, outcome.error
    assert len(all_secrets(host)) == 2


def test_bulk_from_the_key_dir_and_a_missing_key(host, registry, guest, encrypted_info,
                                                 key_dir, make_info, fake_libvirt):
    infos = [encrypted_info(chap=False), encrypted_info(chap=False), make_info()]
    for index, info in enumerate(infos[:2]):
        key_dir(info["serial"], f"key-{index}".encode())
    missing = encrypted_info(chap=False)
    with pytest.raises(exception.PassphraseKeyFileMissing) as err:
        bulk.attach_volumes(host, registry, guest, [*infos, missing], bus="scsi")
    assert err.value.message.startswith("connection_info #4: ")
    assert all_secrets(host) == {}
    outcomes = bulk.attach_volumes(host, registry, guest, infos, bus="scsi")
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    for index, info in enumerate(infos[:2]):
        secret = host.find_secret("volume", info["serial"])
        assert secret_state(fake_libvirt, secret.UUIDString()).value == f"key-{index}".encode()
    bulk.detach_volumes(host, registry, guest, infos)
    assert all_secrets(host) == {}


# -- the command line ------------------------------------------------------------------

def test_cli_attach_with_a_passphrase_file(run_cli, host, guest, encrypted_info, tmp_path):
    info = encrypted_info()
    path = private_file(tmp_path)
    rc, out, err = run_cli("attach", "--domain", guest, "--bus", "scsi", "--json",
                           "--passphrase-file", str(path), "--connection-info", "-",
                           stdin=json.dumps(info))
    assert rc == 0, err
    assert host.find_secret("volume", info["serial"]) is not None
    assert PASSPHRASE.decode() not in out + err
    rc, out, err = run_cli("detach", "--domain", guest, "--connection-info", "-",
                           stdin=json.dumps(info))
    assert rc == 0, err
    assert all_secrets(host) == {}


def test_cli_refusals_are_exit_2(run_cli, host, guest, encrypted_info, make_info, tmp_path):
    rc, _, err = run_cli("attach", "--domain", guest, "--connection-info", "-",
                         stdin=json.dumps(encrypted_info()))
    assert rc == 2 and "--passphrase-file" in err and "volume_key_dir" in err
    path = private_file(tmp_path)
    rc, _, err = run_cli("attach", "--domain", guest, "--passphrase-file", str(path),
                         "--connection-info", "-", stdin=json.dumps(make_info()))
    assert rc == 2 and "not encrypted" in err
    loose = private_file(tmp_path, mode=0o644, name="loose")
    rc, _, err = run_cli("attach", "--domain", guest, "--passphrase-file", str(loose),
                         "--connection-info", "-", stdin=json.dumps(encrypted_info()))
    assert rc == 2 and "chmod 600" in err
    assert PASSPHRASE.decode() not in err
    assert all_secrets(host) == {}


def test_cli_passphrase_with_several_volumes(run_cli, host, guest, encrypted_info, tmp_path):
    files = []
    for index in range(2):
        info_path = tmp_path / f"info{index}.json"
        info_path.write_text(json.dumps(encrypted_info()))
        files += ["--connection-info", str(info_path)]
    rc, _, err = run_cli("attach", "--domain", guest, "--passphrase-file",
                         str(private_file(tmp_path)), *files)
    assert rc == 2 and "several volumes" in err
    assert all_secrets(host) == {}


def test_cli_render_prints_both_secrets(run_cli, encrypted_info):
    info = encrypted_info()
    rc, out, err = run_cli("render", "--json", "--connection-info", "-",
                           stdin=json.dumps(info))
    assert rc == 0, err
    rendered = json.loads(out)
    assert set(rendered) == {"driver", "disk_xml", "secret_xml", "encryption_secret_xml"}
    passphrase_secret = config.LibvirtConfigSecret.from_xml(rendered["encryption_secret_xml"])
    assert (passphrase_secret.usage_type, passphrase_secret.usage_id) == (
        "volume", info["serial"])
    disk = config.LibvirtConfigGuestDisk.from_xml(rendered["disk_xml"])
    assert disk.encryption_secret_uuid == passphrase_secret.uuid
    rc, text, err = run_cli("render", "--connection-info", "-", stdin=json.dumps(info))
    assert rc == 0, err
    assert text.count("<secret ephemeral=") == 2 and "<usage type=\"volume\">" in text
    rc, out, _ = run_cli("render", "--json", "--connection-info", "-",
                         stdin=json.dumps({**info, "data": {**info["data"], "encrypted": False}}))
    assert set(json.loads(out)) == {"driver", "disk_xml", "secret_xml"}  # as before
