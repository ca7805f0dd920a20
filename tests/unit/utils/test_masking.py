"""Masking by placement: JSON by key, argv by item, free text by whole token."""

import json

import pytest

from hvplug import exception
from hvplug.utils.masking import MASK, mask_argv, mask_dict, redact
from hvplug.virt import attach
from hvplug.virt.config import LibvirtConfigSecret


def test_mask_dict_hides_passwords_deeply_and_keeps_uuids():
    info = {"driver_volume_type": "iscsi",
            "data": {"auth_password": "s3cret", "auth_username": "u",
                     "discovery_auth_password": "d1sc", "secret_uuid": "abc",
                     "nested": [{"password": "x"}], "auth_password_in": None}}
    masked = mask_dict(info)
    assert masked["data"]["auth_password"] == MASK
    assert masked["data"]["discovery_auth_password"] == MASK
    assert masked["data"]["nested"][0]["password"] == MASK
    assert masked["data"]["secret_uuid"] == "abc"
    assert masked["data"]["auth_username"] == "u"
    assert masked["data"]["auth_password_in"] is None
    assert "s3cret" not in repr(masked)
    assert info["data"]["auth_password"] == "s3cret"  # the original is untouched


def test_redact():
    assert redact("login as u with pw s3cret failed", ["s3cret", ""]) == \
        f"login as u with pw {MASK} failed"


# ---------------------------------------------------------------- by placement

# One letter, one digit, and words that occur in hvplug's own output.
SHORT_PASSWORDS = ["p", "a", "1", "iscsi", "type", "hvplug", "true"]


def test_redact_masks_whole_tokens_only():
    assert redact("type: login as u with password p failed", ["p"]) == \
        f"type: login as u with password {MASK} failed"
    assert redact("iscsi target iqn.x:iscsi refused iscsi", ["iscsi"]) == \
        f"{MASK} target iqn.x:{MASK} refused {MASK}"
    assert redact("true is truer than untrue", ["true"]) == f"{MASK} is truer than untrue"
    assert redact("pw a.b* and a.bb", ["a.b*"]) == f"pw {MASK} and a.bb"  # no regex


def test_redact_masks_the_longest_secret_first():
    assert redact("secret ab-cd here", ["ab", "ab-cd"]) == f"secret {MASK} here"


def test_mask_argv_touches_only_arguments_carrying_the_secret():
    argv = ["qemu-img", "info", "--image-opts", "driver=iscsi,user=u,password=p,lun=1"]
    assert mask_argv(argv, ["p"]) == ["qemu-img", "info", "--image-opts",
                                      f"driver=iscsi,user=u,password={MASK},lun=1"]
    assert mask_argv(["iscsiadm", "-v", "type"], ["type"]) == ["iscsiadm", "-v", MASK]
    assert mask_argv(["a", "b"], []) == ["a", "b"]


def test_mask_dict_keeps_names_of_secrets():
    masked = mask_dict({"secret_uuid": "u", "secret_usage": "iqn/1", "secret_owned": True,
                        "chap_secret": "p", "PASSWORD": "q"})
    assert masked == {"secret_uuid": "u", "secret_usage": "iqn/1", "secret_owned": True,
                      "chap_secret": MASK, "PASSWORD": MASK}


def test_errors_mask_secret_looking_fields():
    class Leaky(exception.HvplugError):
        msg_fmt = "login as %(username)s with %(auth_password)s failed"
    err = Leaky(username="type", auth_password="s3cret")
    assert err.message == f"login as type with {MASK} failed"
    assert err.kwargs["auth_password"] == MASK


def string_values(value):
    if isinstance(value, dict):
        return [v for item in value.values() for v in string_values(item)]
    if isinstance(value, list):
        return [v for item in value for v in string_values(item)]
    return [value] if isinstance(value, str) else []


def attach_json(run_cli, guest, info):
    rc, out, err = run_cli("attach", "--domain", guest, "--connection-info", "-",
                           "--bus", "scsi", "--json", stdin=json.dumps(info))
    assert rc == 0, err
    return json.loads(out)


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_attach_and_list_json_survive_a_short_password(run_cli, host, guest, make_info,
                                                       password):
    info = make_info(password=password)
    usage = f"{info['data']['target_iqn']}/1"
    result = attach_json(run_cli, guest, info)
    uuid = host.find_secret("iscsi", usage).UUIDString()
    assert result == {"domain": guest, "dev": "sda", "bus": "scsi",
                      "driver": "hvplug.virt.volume.net.LibvirtNetVolumeDriver",
                      "secret_uuid": uuid, "portal": info["data"]["target_portal"],
                      "live": True, "persistent": False, "promoted": False}
    rc, out, _ = run_cli("list", "--domain", guest, "--json")
    listed = json.loads(out)
    assert listed == {"domain": guest, "volumes": [{
        "dev": "sda", "bus": "scsi", "layer": "source", "protocol": "iscsi", "source": usage,
        "portal": info["data"]["target_portal"], "secret_uuid": uuid, "secret_usage": None}]}
    rc, out, _ = run_cli("verify", "--domain", guest, "--json")
    assert rc == 0 and json.loads(out)["ok"] is True
    (row,) = listed["volumes"]
    named = {key: value for key, value in row.items() if key != "protocol"}  # 'iscsi'
    assert password not in string_values(result) + string_values(named)


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_attach_text_survives_a_short_password(run_cli, host, guest, make_info, password):
    info = make_info(password=password)
    rc, out, err = run_cli("attach", "--domain", guest, "--connection-info", "-",
                           "--bus", "scsi", stdin=json.dumps(info))
    uuid = host.find_secret("iscsi", f"{info['data']['target_iqn']}/1").UUIDString()
    assert (rc, err) == (0, "")
    assert out == (f"Attached to domain '{guest}' as sda (bus scsi) through portal "
                   f"{info['data']['target_portal']}, CHAP secret {uuid}\n")


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_error_json_survives_a_short_password(run_cli, guest, make_info, fake_libvirt,
                                              password):
    def refuse(*args):
        raise RuntimeError(fake_libvirt.ISCSI_AUTH_FAILURE)
    fake_libvirt.set_iscsi_login(refuse)
    info = make_info(password=password)
    rc, out, err = run_cli("attach", "--domain", guest, "--connection-info", "-",
                           "--json", stdin=json.dumps(info))
    error = json.loads(out)["error"]
    info["data"]["auth_password"] = "a-long-unmistakable-password"
    rc2, out2, _ = run_cli("attach", "--domain", guest, "--connection-info", "-",
                           "--json", stdin=json.dumps(info))
    assert (rc, rc2) == (1, 1)
    assert error == json.loads(out2)["error"]  # the same words whatever the password
    assert (error["type"], error["exit_code"]) == ("AuthenticationFailed", 1)
    assert info["data"]["auth_username"] in error["message"] and MASK not in error["message"]
    assert err == f"hvplug: error: {error['message']}\n"


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_unexpected_error_masks_the_password_token_only(run_cli, guest, make_info,
                                                        monkeypatch, password):
    def boom(*args, **kwargs):
        raise ValueError(f"boom {password}!")
    monkeypatch.setattr(attach, "attach_volume", boom)
    rc, out, err = run_cli("attach", "--domain", guest, "--connection-info", "-", "--json",
                           stdin=json.dumps(make_info(password=password)))
    expected = f"unexpected ValueError: boom {MASK}! (rerun with --debug for details)"
    assert rc == 1
    assert json.loads(out) == {"error": {"type": "ValueError", "message": expected,
                                         "exit_code": 1}}
    assert err == f"hvplug: error: {expected}\n"


def test_render_json_survives_short_passwords(run_cli, registry, make_info):
    wrong = {}
    for password in SHORT_PASSWORDS:
        info = make_info(password=password)
        rc, out, _ = run_cli("render", "--connection-info", "-", "--json", "--bus", "scsi",
                             stdin=json.dumps(info))
        rendered = json.loads(out)
        driver, disk_xml, secret_xml = attach.render_volume(registry, info, bus="scsi")
        ours = LibvirtConfigSecret.from_xml(secret_xml).uuid
        theirs = rendered["disk_xml"].split("uuid=")[1][1:37]
        expected = {"driver": attach.class_path(driver), "secret_xml": secret_xml,
                    "disk_xml": disk_xml}
        got = {key: value.replace(theirs, ours) for key, value in rendered.items()}
        if rc != 0 or got != expected or password in string_values(rendered):
            wrong[password] = got
    assert wrong == {}, "render --json output differs from the rendered volume"
