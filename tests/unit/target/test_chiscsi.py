"""ChiscsiAdm against a fake iscsictl that replays chiscsi's recorded answers.

chiscsi cannot run here (Chelsio's proprietary kernel module);
tests/faketargettools.FakeIscsictl keeps the module's targets and answers
with the output and exit codes in tests/data/target/transcripts/iscsictl.txt.
"""

import itertools
import logging
import os
import stat
from types import SimpleNamespace

import pytest

from hvplug import exception
from hvplug.conf import CONF
from hvplug.target import base, chiscsi, registry
from hvplug.target.export import Export
from tests.faketargettools import FakeIscsictl, assert_golden_text

IQN = "iqn.2010-10.org.openstack:volume-vol-c"
PASSWORD = "Pw02xxxxxxxxxxxx"
GLOBAL_CONF = b"global:\n\tiscsi_auth_order=CHAP\n\tDISC_AuthMethod=None\n"


@pytest.fixture
def chap(monkeypatch):
    counter = itertools.count(1)
    monkeypatch.setattr(base, "random_chap", lambda n: (
        f"{'user' if n == 20 else 'Pw'}{next(counter):02d}".ljust(n, "x")))


@pytest.fixture(autouse=True)
def any_backing_path(monkeypatch):
    """The paths here (/srv/..., /dev/vg0/...) are the ones chiscsi would see and
    do not exist on this host: the backing-path rule is tested in test_base.py."""
    monkeypatch.setattr(base.ISCSITargetHelper, "check_backing",
                        lambda self, path, may_be_missing=False: path)


@pytest.fixture
def env(tmp_path, config_fixture, chap):
    global_conf = tmp_path / "chelsio-iscsi" / "chiscsi.conf"
    global_conf.parent.mkdir()
    global_conf.write_bytes(GLOBAL_CONF)
    os.utime(global_conf, (1_000_000_000, 1_000_000_000))
    config_fixture.config(group="target", iscsi_helper="chiscsi",
                          chiscsi_conf=str(global_conf), iscsi_ip_address="192.0.2.10",
                          exports_dir=str(tmp_path / "exports"),
                          volumes_dir=str(tmp_path / "volumes"))
    fake = FakeIscsictl()
    helper = registry.target_from_conf(CONF.target, execute=fake)
    return SimpleNamespace(fake=fake, helper=helper, global_conf=global_conf,
                           file=tmp_path / "volumes" / "chiscsi" / "volume-vol-c")


def test_create_export_writes_the_target_file_and_starts_it(env):
    export = env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    assert (export.tid, export.lun, export.iqn) == (1, 0, IQN)
    assert env.fake.calls == [
        ("iscsictl", "-S", f"target={IQN}", "-f", str(env.file), "-x", str(env.global_conf)),
        ("iscsictl", "-c", "target=ALL")]
    assert_golden_text(env.file.read_text(), "target/chiscsi_volume-vol-c.conf")
    assert env.fake.starts[0]["file"] == env.file.read_text()
    assert env.fake.starts[0]["mode"] == 0o600
    assert stat.S_IMODE(os.stat(env.file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(env.file.parent).st_mode) == 0o700
    assert os.listdir(env.file.parent) == ["volume-vol-c"]


def test_the_global_chiscsi_conf_is_passed_but_never_touched(env):
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    env.helper.remove_export("vol-c")
    assert env.fake.starts[0]["global"] == GLOBAL_CONF
    assert env.global_conf.read_bytes() == GLOBAL_CONF
    assert os.stat(env.global_conf).st_mtime == 1_000_000_000
    assert os.listdir(env.global_conf.parent) == ["chiscsi.conf"]


def test_connection_info_says_lun_0(env):
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    data = env.helper.initialize_connection("vol-c", {"initiator": "iqn.2024-01.i:1"})["data"]
    assert (data["target_lun"], data["target_iqn"], data["target_portal"]) == (
        0, IQN, "192.0.2.10:3260")
    assert data["auth_password"] == PASSWORD


def test_full_cycle_leaves_nothing_behind(env, tmp_path):
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    env.helper.initialize_connection("vol-c", {"initiator": "iqn.2024-01.i:1"})
    env.helper.terminate_connection("vol-c", {"initiator": "iqn.2024-01.i:1"})
    env.helper.remove_export("vol-c")
    assert env.fake.calls[-2:] == [("iscsictl", "-c", f"target={IQN}"),
                                   ("iscsictl", "-s", f"target={IQN}")]
    assert env.fake.targets == {} and not env.file.exists()
    assert list((tmp_path / "exports").iterdir()) == []


def test_create_is_idempotent_and_tids_come_from_the_listing(env):
    env.helper.create_export("vol-a", "/dev/vg0/a")
    second = env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    assert second.tid == 2
    assert env.helper.create_export("vol-c", "/dev/vg0/vol-c") == second
    assert env.fake.calls[-1] == ("iscsictl", "-c", f"target={IQN}")


def test_remove_when_the_target_is_not_running_only_removes_the_file(env):
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    env.fake.restart()
    env.helper.remove_export("vol-c")
    assert env.fake.commands("-s") == [] and not env.file.exists()


def test_remove_tolerates_is_not_found_after_the_check(env):
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    env.fake.inject("stop", "stop.not_found", name=IQN)  # another remove got there first
    env.helper.remove_export("vol-c")
    assert not env.file.exists() and env.helper.store.all() == []


def test_remove_while_initiators_stay_logged_in_fails_and_keeps_the_file(env):
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    env.fake.targets[IQN]["busy"] = True  # chiscsi answers "busy." with exit 0
    with pytest.raises(exception.TargetError, match="initiators stayed logged in"):
        env.helper.remove_export("vol-c")
    assert env.file.exists() and env.helper.export("vol-c")


def test_ensure_export_after_a_restart_starts_it_again(env):
    first = env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    env.fake.restart()
    again = env.helper.ensure_export("vol-c")
    assert again.tid == 2  # chiscsi ids only grow
    assert again.auth_password == first.auth_password
    assert env.fake.targets[IQN]["chap"] == ("user01xxxxxxxxxxxxxx", PASSWORD)


def test_failed_start_removes_the_file_and_hides_the_password(env, caplog):
    caplog.set_level(logging.DEBUG)
    env.fake.inject("start", "start.failed", name=IQN,
                    reason=f"bad key Auth_CHAP_Initiator in {PASSWORD}")
    with pytest.raises(exception.TargetError) as raised:
        env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    message = str(raised.value)
    assert message.startswith(f"iscsictl could not create target {IQN}: iscsictl -S "
                              "exited 255: bad key Auth_CHAP_Initiator in ***")
    assert PASSWORD not in message and PASSWORD not in caplog.text
    assert not env.file.exists() and env.helper.store.all() == []


def test_failed_restart_puts_the_previous_file_back(env):
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    before = env.file.read_text()
    env.fake.restart()
    env.fake.inject("start", "start.failed", name=IQN, reason="LUN attach failed")
    with pytest.raises(exception.TargetError):
        env.helper.ensure_export("vol-c")
    assert env.file.read_text() == before


def test_started_but_not_listed_is_a_failure_with_rollback(env):
    env.fake.inject("start", "start.added", name=IQN)  # says added, keeps nothing
    with pytest.raises(exception.TargetError, match="does not list the target"):
        env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    assert not env.file.exists()


def test_failure_after_the_start_stops_the_target_again(env, monkeypatch):
    monkeypatch.setattr(chiscsi.time, "sleep", lambda s: None)
    for _ in range(chiscsi._LOCK_ATTEMPTS):  # the listing never gets iscsictl's lock
        env.fake.inject("check", "locked")
    with pytest.raises(exception.TargetError, match="already running"):
        env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    assert env.fake.calls[-1] == ("iscsictl", "-s", f"target={IQN}")
    assert env.fake.targets == {} and not env.file.exists()


def test_waits_for_another_iscsictl_holding_the_lock(env, monkeypatch):
    monkeypatch.setattr(chiscsi.time, "sleep", lambda s: None)
    env.fake.inject("start", "locked")
    assert env.helper.create_export("vol-c", "/dev/vg0/vol-c").tid == 1
    assert len(env.fake.commands("-S")) == 2


def test_password_never_logged_over_a_whole_cycle(env, caplog):
    caplog.set_level(logging.DEBUG)
    env.helper.create_export("vol-c", "/dev/vg0/vol-c")
    out, _ = env.fake("iscsictl", "-c", f"target={IQN}")
    assert PASSWORD in out  # iscsictl's detail view shows it ...
    env.helper.ensure_export("vol-c")  # ... and the helper reads that view
    env.helper.remove_export("vol-c")
    assert PASSWORD not in caplog.text


def test_ipv6_and_secondary_portals_become_portal_groups(env, config_fixture):
    config_fixture.config(group="target", iscsi_ip_address="2001:db8::10",
                          iscsi_secondary_ip_addresses=["192.0.2.11"], iscsi_port=3261)
    helper = registry.target_from_conf(CONF.target, execute=env.fake)
    helper.create_export("vol-c", "/dev/vg0/vol-c")
    lines = env.file.read_text().splitlines()
    assert "        PortalGroup=1@[2001:db8::10]:3261" in lines
    assert "        PortalGroup=2@192.0.2.11:3261" in lines


def test_upper_case_volume_ids_get_the_lower_case_name_chiscsi_serves(env):
    export = env.helper.create_export("Vol-C", "/dev/vg0/vol-c")
    assert export.iqn == IQN
    assert env.helper.target_file(export).name == "volume-Vol-C"
    assert f"TargetName={IQN}\n" in env.helper.target_file(export).read_text()


def test_no_chap_means_no_auth_lines_and_no_none(env):
    record = Export(volume_id="vol-c", path="/dev/vg0/vol-c", iqn=IQN, helper="chiscsi",
                    portals=["192.0.2.10:3260"], lun=0, auth_method=None)
    env.helper.store.save(record)
    env.helper.ensure_export("vol-c")
    text = env.file.read_text()
    assert "Auth" not in text and "None" not in text
    assert text.splitlines()[-1] == "        PortalGroup=1@192.0.2.10:3260"


@pytest.mark.parametrize("path", ["/srv/a#b.img", '/srv/a"b.img'])
def test_paths_iscsictl_would_cut_are_refused(env, path):
    with pytest.raises(exception.InvalidInput, match="backing store path .* "
                       "cannot go into a chiscsi target file"):
        env.helper.create_export("vol-c", path)
    assert env.fake.calls == [] and not env.file.exists()


@pytest.mark.parametrize("name", ["chiscsi", "iscsictl"])
def test_registry_maps_both_names(name):
    helper = registry.target_from_conf(CONF.target, helper=name)
    assert type(helper) is chiscsi.ChiscsiAdm and helper.helper_name == "chiscsi"


def test_enable_iser_is_refused_clearly(config_fixture):
    config_fixture.config(group="target", iscsi_protocol="iser")
    with pytest.raises(exception.InvalidInput, match="chiscsi helper cannot export over iSER"):
        registry.target_from_conf(CONF.target, helper="iscsictl")


def test_listing_parser_reads_cinders_recorded_answer():
    text = ("\nTARGET: iqn.2010-10.org.openstack:volume-1, id=1, login_ip=0\n"
            "        PortalGroup=1@10.9.8.7:3260,timeout=0\n"
            "        TargetDevice=/dev/vg/volume-1,BLK,PROD=CHISCSI Target,SN=0N07\n"
            "\nTARGET: iqn.2010-10.org.openstack:volume-2, id=12, login_ip=3\n")
    assert chiscsi.parse_target_ids(text) == {"iqn.2010-10.org.openstack:volume-1": 1,
                                              "iqn.2010-10.org.openstack:volume-2": 12}
