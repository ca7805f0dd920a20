from hvplug.utils.masking import MASK, mask_dict, redact


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
