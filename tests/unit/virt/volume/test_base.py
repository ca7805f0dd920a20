"""The disk settings every driver shares, key by key as Nova writes them.

multiattach (top level and ``data``), cache ``none`` for a shareable disk,
every Nova QoS key and the burst lengths, the block sizes, and one warning
naming the keys hvplug ignores.  Each generated disk is checked against
libvirt's schema too.
"""

import logging

import pytest

from hvplug import exception
from hvplug.virt import attach
from hvplug.virt.volume.net import LibvirtNetVolumeDriver
from tests.xmlcheck import assert_valid_disk

DISK = {"dev": "sdb", "bus": "scsi"}


def info(top=None, **data) -> dict:
    document = {"driver_volume_type": "iscsi",
                "data": {"target_portal": "192.0.2.10:3260",
                         "target_iqn": "iqn.2010-10.org.openstack:volume-42",
                         "target_lun": 1, "volume_id": "42", **data},
                "serial": "42"}
    document.update(top or {})
    return document


def disk_of(document, config_fixture=None):
    driver = LibvirtNetVolumeDriver(host=None)
    driver.validate(document)
    conf = driver.get_config(driver.connection_of(document), DISK)
    assert_valid_disk(conf.to_xml())
    return conf


@pytest.fixture(autouse=True)
def initiator(config_fixture):
    config_fixture.config(group="libvirt", iscsi_initiator_name="iqn.1993-08.org.debian:01:t",
                          disk_cachemode="writeback")


@pytest.mark.parametrize("document", [info(top={"multiattach": True}),
                                      info(multiattach=True)],
                         ids=["top-level", "in-data"])
def test_multiattach_is_shareable_with_the_host_cache_off(document):
    disk = disk_of(document)
    assert disk.shareable and disk.driver_cache == "none"  # not the configured writeback


def test_not_multiattach_keeps_the_configured_cache():
    disk = disk_of(info(top={"multiattach": False}))
    assert not disk.shareable and disk.driver_cache == "writeback"


def test_block_sizes_become_blockio():
    disk = disk_of(info(logical_block_size="4096", physical_block_size=4096))
    assert (disk.logical_block_size, disk.physical_block_size) == (4096, 4096)
    assert '<blockio logical_block_size="4096" physical_block_size="4096"/>' in disk.to_xml()
    assert disk_of(info(physical_block_size=4096)).logical_block_size is None


@pytest.mark.parametrize(("data", "reason"), [
    ({"logical_block_size": 4000}, "data.logical_block_size must be a power of two"),
    ({"logical_block_size": 65536}, "data.logical_block_size must be an integer"),
    ({"physical_block_size": "4k"}, "data.physical_block_size must be an integer"),
    ({"logical_block_size": 4096, "physical_block_size": 512},
     "physical_block_size (512) is smaller than data.logical_block_size (4096)"),
])
def test_bad_block_sizes_are_exit_2_naming_the_key(data, reason):
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        disk_of(info(**data))
    assert reason in err.value.message and err.value.exit_code == 2


NOVA_QOS = {  # every key Nova's LibvirtBaseVolumeDriver passes on, bursts included
    "total_bytes_sec": 10485760, "total_bytes_sec_max": 20971520,
    "read_iops_sec": 100, "read_iops_sec_max": 200,
    "write_iops_sec": 50, "write_iops_sec_max": 80, "size_iops_sec": 4096,
}


def test_every_nova_qos_key_and_the_burst_lengths_reach_iotune():
    specs = {**NOVA_QOS, "total_bytes_sec_max_length": 30, "read_iops_sec_max_length": 5}
    disk = disk_of(info(qos_specs={k: str(v) for k, v in specs.items()}))
    assert {k: getattr(disk, k) for k in specs} == specs
    xml = disk.to_xml()
    assert "<total_bytes_sec_max_length>30</total_bytes_sec_max_length>" in xml


@pytest.mark.parametrize(("specs", "reason"), [
    ({"total_bytes_sec_max": 10, "read_bytes_sec_max": 5, "total_bytes_sec": 1,
      "read_bytes_sec": 1}, "cannot be combined"),
    ({"total_iops_sec_max": 100, "write_iops_sec_max": 5}, "cannot be combined"),
    ({"read_bytes_sec_max": 100}, "data.qos_specs.read_bytes_sec_max (a burst) needs "
                                  "data.qos_specs.read_bytes_sec"),
    ({"read_bytes_sec": 100, "read_bytes_sec_max": 50}, "is below"),
    ({"write_iops_sec": 10, "write_iops_sec_max_length": 5}, "write_iops_sec_max_length "
                                                             "(how long a burst lasts) needs"),
    ({"total_iops_sec_max_length": "x"}, "data.qos_specs.total_iops_sec_max_length must be"),
])
def test_qos_rules_across_keys_are_exit_2(specs, reason):
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        disk_of(info(qos_specs=specs))
    assert reason in err.value.message and err.value.exit_code == 2


@pytest.mark.parametrize("specs", ["fast", ["total_bytes_sec"], 5])
def test_qos_specs_not_an_object_is_exit_2(specs):
    with pytest.raises(exception.InvalidConnectionInfo, match="qos_specs must be an object"):
        disk_of(info(qos_specs=specs))


def test_ignored_keys_are_named_in_one_warning(registry, caplog):
    document = info(top={"attachment_id": "a1"}, provider_location="x",
                    qos_specs={"read_iops_sec": 5, "consumer": "front-end"})
    with caplog.at_level(logging.WARNING, logger=attach.__name__):
        attach.checked_driver(registry, document)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == attach.__name__]
    assert ("attachment_id, data.provider_location, data.qos_specs.consumer ignored"
            in warning)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=attach.__name__):
        attach.checked_driver(registry, info())
    assert not caplog.records


@pytest.mark.parametrize("keys", [{"auth_username_in": "tgt", "auth_password_in": "pw-in"},
                                  {"auth_password_in": "pw-in"}])
def test_mutual_chap_on_the_built_in_initiator_is_refused(keys):
    document = info(auth_method="CHAP", auth_username="u", auth_password="pw", **keys)
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        disk_of(document)
    message = err.value.message
    assert "mutual CHAP" in message and "LibvirtISCSIVolumeDriver" in message
    assert "iscsi_iface" in message and err.value.exit_code == 2
    assert "pw-in" not in message  # a password is never quoted
