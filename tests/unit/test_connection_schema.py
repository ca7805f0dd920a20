"""The declared shape of connection_info: every violation is exit 2 naming the key."""

import copy

import pytest

from hvplug import connection_schema, exception
from hvplug.virt.volume.net import LibvirtNetVolumeDriver

VALID = {"driver_volume_type": "iscsi",
         "data": {"target_portal": "192.0.2.10:3260",
                  "target_iqn": "iqn.2010-10.org.openstack:volume-42", "target_lun": 1,
                  "auth_method": "CHAP", "auth_username": "u1", "auth_password": "s3cret",
                  "target_portals": ["192.0.2.10:3260", "[2001:db8::1]:3261"],
                  "target_iqns": ["iqn.2010-10.org.openstack:volume-42"] * 2,
                  "target_luns": [1, "1"], "qos_specs": {"total_bytes_sec": "1024"},
                  "access_mode": "ro", "discard": True, "volume_id": "42"},
         "serial": "42"}


def mutated(path: tuple, value):
    info = copy.deepcopy(VALID)
    node = info
    for step in path[:-1]:
        node = node[step]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return info


def test_a_valid_document_passes_unchanged():
    info = copy.deepcopy(VALID)
    assert connection_schema.check(info, connection_schema.ISCSI_NETWORK) == VALID


@pytest.mark.parametrize(("path", "value", "says"), [
    (("driver_volume_type",), "is\ncsi", "connection_info.driver_volume_type holds"),
    (("driver_volume_type",), "is csi", "connection_info.driver_volume_type must be a volume"),
    (("data",), [], "connection_info.data must be an object, not a list"),
    (("serial",), "{}", "connection_info.serial must be letters"),
    (("serial",), 42, "connection_info.serial must be a string, not a number"),
    (("multiattach",), "yes", "connection_info.multiattach must be true or false"),
    (("data", "target_lun"), -1, "data.target_lun must be an integer from 0 to 16383"),
    (("data", "target_lun"), 2 ** 64 + 1, "data.target_lun must be an integer"),
    (("data", "target_lun"), "²", "data.target_lun must be an integer"),
    (("data", "target_lun"), KeyError, "data.target_lun is missing"),
    (("data", "target_iqn"), "volume-42", "data.target_iqn must be an iSCSI name"),
    (("data", "target_iqn"), "iqn.a b", "data.target_iqn must be an iSCSI name"),
    (("data", "target_iqn"), "iqn." + "a" * 300, "at most 223"),
    (("data", "target_portal"), "ho<st>&x:3260", "the host must be an IP address or a DNS"),
    (("data", "target_portal"), "h:0", "needs a port from 1 to 65535"),
    (("data", "target_portal"), "h:65536", "needs a port from 1 to 65535"),
    (("data", "target_portal"), "h:²", "needs a port from 1 to 65535"),
    (("data", "target_portal"), "[fe80::1%eth0]:3260", "an IPv6 address is written"),
    (("data", "target_portals"), "192.0.2.10:3260", "data.target_portals must be a list"),
    (("data", "target_portals", 1), 7, "data.target_portals[1] must be a string"),
    (("data", "target_iqns"), {"a": 1}, "data.target_iqns must be a list, not an object"),
    (("data", "target_luns", 0), 16384, "data.target_luns[0] must be an integer"),
    (("data", "auth_username"), "u%1", "data.auth_username must be letters, digits"),
    (("data", "auth_method"), "kerberos", "data.auth_method is not supported"),
    (("data", "qos_specs"), [1], "data.qos_specs must be an object, not a list"),
    (("data", "qos_specs"), {"read_iops_sec": 2 ** 64}, "data.qos_specs.read_iops_sec must"),
    (("data", "qos_specs"), {"read_iops_sec": -1}, "data.qos_specs.read_iops_sec must"),
    (("data", "access_mode"), "RO", "data.access_mode must be one of 'rw', 'ro'"),
    (("data", "discard"), "false", "data.discard must be true or false"),
    (("data", "secret_uuid"), "not-a-uuid", "data.secret_uuid must be a UUID"),
    (("data", "device_path"), "dev/sda", "data.device_path must be an absolute path"),
    (("data", "selected_target"), {"portal": "h:1"}, "data.selected_target.iqn is missing"),
])
def test_violations_name_the_key_and_rule(path, value, says):
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        connection_schema.check(mutated(path, value), connection_schema.ISCSI_NETWORK)
    assert says in err.value.message
    assert err.value.exit_code == exception.EXIT_BAD_INPUT


@pytest.mark.parametrize("password", [7, "", "p\nw", "p\x00w", "x" * 300])
def test_a_bad_password_is_never_quoted(password):
    info = mutated(("data", "auth_password"), password)
    if password == "":  # "" counts as absent: CHAP without a password
        with pytest.raises(exception.InvalidConnectionInfo, match="auth_password is missing"):
            LibvirtNetVolumeDriver(host=None).validate(info)
        return
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        connection_schema.check(info, connection_schema.ISCSI_NETWORK)
    assert "not shown" in err.value.message
    assert str(password) not in err.value.message.replace("data.auth_password", "")


def test_volume_id_must_make_a_serial_when_there_is_none():
    info = mutated(("serial",), KeyError)
    info["data"]["volume_id"] = "a/b"
    with pytest.raises(exception.InvalidConnectionInfo, match="data.volume_id .the disk's serial"):
        connection_schema.check(info, connection_schema.ISCSI_NETWORK)
    info["serial"] = "ab"  # the serial wins: volume_id is then only a name
    connection_schema.check(info, connection_schema.ISCSI_NETWORK)


def test_null_and_empty_count_as_absent():
    info = mutated(("data", "qos_specs"), None)
    info["data"]["discard"] = None
    info["serial"] = ""
    connection_schema.check(info, connection_schema.ISCSI_NETWORK)


def test_host_attached_iscsi_allows_wider_chap_names():
    info = mutated(("data", "auth_username"), "user@example.org")
    connection_schema.check(info, connection_schema.ISCSI)
    with pytest.raises(exception.InvalidConnectionInfo, match="auth_username must be letters"):
        connection_schema.check(info, connection_schema.ISCSI_NETWORK)


@pytest.mark.parametrize(("data", "says"), [
    ({"target_wwn": "5001f4a0c0d1000", "target_lun": 1}, "data.target_wwn must be a 16-hex"),
    ({"target_wwn": [], "target_lun": 1}, "data.target_wwn must not be empty"),
    ({"target_wwn": "5001f4a0c0d10001", "target_lun": 65536}, "from 0 to 65535"),
    ({"target_wwn": "5001f4a0c0d10001", "target_lun": 1,
      "initiator_target_map": {"21000024ff4b9a3c": "5001f4a0c0d10001"}},
     "data.initiator_target_map.21000024ff4b9a3c must be a list"),
])
def test_fibre_channel_shape(data, says):
    with pytest.raises(exception.InvalidConnectionInfo, match=says):
        connection_schema.check({"driver_volume_type": "fibre_channel", "data": data},
                                connection_schema.FIBRE_CHANNEL)


def test_ten_thousand_portals_check_in_one_pass():
    portals = [f"10.0.{i // 256}.{i % 256}:3260" for i in range(10_000)]
    info = mutated(("data", "target_portals"), portals)
    info["data"]["target_iqns"] = ["iqn.x"] * 10_000
    info["data"]["target_luns"] = [1] * 10_000
    connection_schema.check(info, connection_schema.ISCSI_NETWORK)


@pytest.mark.parametrize(("view", "shape"), [
    (connection_schema.CommonData, connection_schema.COMMON),
    (connection_schema.ISCSIData, connection_schema.ISCSI),
    (connection_schema.ISCSIData, connection_schema.ISCSI_NETWORK),
    (connection_schema.FibreChannelData, connection_schema.FIBRE_CHANNEL),
])
def test_the_typed_views_name_only_keys_their_shape_checks(view, shape):
    assert set(view.__annotations__) <= set(shape.keys)
    assert view.__optional_keys__ == frozenset(view.__annotations__)


def test_iscsi_and_fibre_channel_data_share_the_common_keys():
    common = set(connection_schema.CommonData.__annotations__)
    for view in (connection_schema.ISCSIData, connection_schema.FibreChannelData):
        assert common < set(view.__annotations__)
