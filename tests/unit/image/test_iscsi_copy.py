from hvplug.image import iscsi_copy

DATA = {"target_portal": "[::1]:3260", "target_iqn": "iqn.2010-10.org.openstack:volume-1",
        "target_lun": 2, "auth_method": "CHAP", "auth_username": "u",
        "auth_password": "p"}


def test_image_opts_with_chap(config_fixture):
    config_fixture.config(group="libvirt", iscsi_initiator_name="iqn.1993-08.org.x:1")
    assert iscsi_copy.image_opts(DATA, "chap") == (
        "driver=iscsi,transport=tcp,portal=[::1]:3260,"
        "target=iqn.2010-10.org.openstack:volume-1,lun=2,"
        "initiator-name=iqn.1993-08.org.x:1,user=u,password-secret=chap")


def test_image_opts_without_chap_never_names_a_secret(config_fixture):
    config_fixture.config(group="libvirt", iscsi_initiator_name="iqn.1993-08.org.x:1")
    data = {k: v for k, v in DATA.items() if not k.startswith("auth")}
    opts = iscsi_copy.image_opts(data, None)
    assert "user=" not in opts and "password" not in opts


def test_commas_in_paths_are_doubled():
    assert iscsi_copy._escape("/srv/a,b.img") == "/srv/a,,b.img"


def test_password_file_is_private_and_removed():
    with iscsi_copy._password_file("s3cret") as path:
        assert path.read_text() == "s3cret"
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
    assert not path.exists()
