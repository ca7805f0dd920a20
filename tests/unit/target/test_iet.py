"""IetAdm against a fake ietadm that replays IET's recorded answers.

IET cannot run here (kernel module); tests/faketargettools.FakeIetadm keeps
the daemon's state, writes /proc/net/iet/{volume,session} into tmp_path and
answers with the exit codes and messages in
tests/data/target/transcripts/ietadm.txt.
"""

import itertools
import logging
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hvplug import exception
from hvplug.conf import CONF
from hvplug.target import base, iet, registry
from hvplug.target.export import Export
from hvplug.utils import executor
from tests.faketargettools import FakeIetadm, assert_golden_text

REAL_EXECUTE = executor.execute  # before tests/unit/conftest.py replaces it
IQN_A = "iqn.2010-10.org.openstack:volume-vol-a"
IQN_B = "iqn.2010-10.org.openstack:volume-vol-b"
INITIATOR = "iqn.1993-08.org.debian:01:guest"
FOREIGN = Path(__file__).parents[2] / "data" / "target" / "ietd_foreign.conf"


@pytest.fixture
def chap(monkeypatch):
    """Predictable CHAP credentials: user01xx..., Pw02xx..., user03xx..., ..."""
    counter = itertools.count(1)
    monkeypatch.setattr(base, "random_chap", lambda n: (
        f"{'user' if n == 20 else 'Pw'}{next(counter):02d}".ljust(n, "x")))


@pytest.fixture(autouse=True)
def any_backing_path(monkeypatch):
    """The paths here (/srv/..., /dev/vg0/...) are the ones ietd would see and
    do not exist on this host: the backing-path rule is tested in test_base.py."""
    monkeypatch.setattr(base.ISCSITargetHelper, "check_backing",
                        lambda self, path, may_be_missing=False: path)


def helper_for(fake: FakeIetadm) -> iet.IetAdm:
    helper = registry.target_from_conf(CONF.target, execute=fake)
    helper.proc_volume, helper.proc_session = str(fake.volume_path), str(fake.session_path)
    return helper


@pytest.fixture
def env(tmp_path, config_fixture, chap):
    conf = tmp_path / "etc" / "iet" / "ietd.conf"
    config_fixture.config(group="target", iscsi_helper="ietadm", iet_conf=str(conf),
                          exports_dir=str(tmp_path / "exports"),
                          volumes_dir=str(tmp_path / "volumes"))
    fake = FakeIetadm(tmp_path / "proc")
    return SimpleNamespace(fake=fake, conf=conf, helper=helper_for(fake))


def test_create_export_runs_ietadm_and_persists_the_block(env):
    export = env.helper.create_export("vol-a", "/srv/a.img")
    assert (export.tid, export.lun) == (1, 0)
    assert env.fake.calls == [
        ("ietadm", "--op", "new", "--tid=1", "--params", f"Name={IQN_A}"),
        ("ietadm", "--op", "new", "--tid=1", "--lun=0", "--params",
         "Path=/srv/a.img,Type=fileio"),
        ("ietadm", "--op", "new", "--tid=1", "--user",
         "--params=IncomingUser=user01xxxxxxxxxxxxxx,Password=Pw02xxxxxxxxxxxx")]
    assert env.fake.kwargs[2]["secrets"] == ("Pw02xxxxxxxxxxxx",)
    assert env.fake.targets[1].luns == {0: ("/srv/a.img", "fileio")}
    assert_golden_text(env.conf.read_text(), "target/ietd_one_volume.conf")
    assert stat.S_IMODE(os.stat(env.conf).st_mode) == 0o600
    assert os.listdir(env.conf.parent) == ["ietd.conf"]  # no temporary file left


def test_connection_info_says_lun_0(env):
    env.helper.create_export("vol-a", "/srv/a.img")
    info = env.helper.initialize_connection("vol-a", {"initiator": INITIATOR,
                                                      "multipath": True})
    data = info["data"]
    assert info["driver_volume_type"] == "iscsi"
    assert data["target_lun"] == 0 and type(data["target_lun"]) is int
    assert data["target_luns"] == [0] and data["target_iqn"] == IQN_A
    assert (data["auth_username"], data["auth_password"]) == ("user01xxxxxxxxxxxxxx",
                                                              "Pw02xxxxxxxxxxxx")
    assert env.helper.export("vol-a").provider_location() == f"127.0.0.1:3260,1 {IQN_A} 0"


def test_full_cycle_leaves_nothing_behind(env, tmp_path):
    env.helper.create_export("vol-a", "/srv/a.img")
    env.helper.initialize_connection("vol-a", {"initiator": INITIATOR})
    env.helper.terminate_connection("vol-a", {"initiator": INITIATOR})
    env.helper.remove_export("vol-a")
    assert env.fake.targets == {}
    assert env.fake.volume_path.read_text() == ""
    assert env.conf.read_text() == ""
    assert list((tmp_path / "exports").iterdir()) == []


def test_two_volumes_then_removing_one_keeps_everything_else_byte_identical(env):
    env.conf.parent.mkdir(parents=True)
    env.conf.write_text(FOREIGN.read_text())
    env.fake.restart(env.conf)  # ietd started with the administrator's target: tid 1
    env.helper.create_export("vol-a", "/srv/a.img")
    env.helper.create_export("vol-b", "/dev/vg0/vol-b")
    assert [e.tid for e in env.helper.store.all()] == [2, 3]
    two = env.conf.read_text()
    assert_golden_text(two, "target/ietd_two_volumes.conf")
    block_b = two[two.index(f"Target {IQN_B}"):]

    env.helper.remove_export("vol-a")
    one = env.conf.read_text()
    assert_golden_text(one, "target/ietd_foreign_plus_b.conf")
    assert one == FOREIGN.read_text() + block_b
    assert env.fake.tid_of("iqn.2001-04.com.example:backup") == 1
    assert env.fake.tid_of(IQN_B) == 3 and env.fake.tid_of(IQN_A) is None


def test_no_chap_means_no_account_and_no_none_line(env):
    record = Export(volume_id="vol-a", path="/srv/a.img", iqn=IQN_A, helper="ietadm",
                    portals=["127.0.0.1:3260"], lun=0, auth_method=None)
    env.helper.store.save(record)
    env.helper.ensure_export("vol-a")
    assert env.conf.read_text() == (f"Target {IQN_A}\n"
                                    "    Lun 0 Path=/srv/a.img,Type=fileio\n")
    assert "None" not in env.conf.read_text()
    assert env.fake.commands("--user") == []
    assert "auth_method" not in env.helper.initialize_connection("vol-a")["data"]


def test_picks_a_free_tid_above_foreign_targets(env):
    env.fake.add_target(1, "iqn.2001-04.com.example:one", "/dev/sdb")
    env.fake.add_target(3, "iqn.2001-04.com.example:three", "/dev/sdc")
    assert env.helper.create_export("vol-a", "/srv/a.img").tid == 4


def test_234_when_a_concurrent_create_won_the_name_is_tolerated(env):
    # another hvplug process creates the same target between our look and our create
    env.fake.inject("new_target", before=lambda: env.fake.add_target(7, IQN_A))
    export = env.helper.create_export("vol-a", "/srv/a.img")
    assert export.tid == 7
    assert len(env.fake.commands("--params", f"Name={IQN_A}")) == 1  # answered 234
    assert env.fake.targets[7].luns == {0: ("/srv/a.img", "fileio")}


def test_239_when_another_target_took_the_tid_picks_the_next(env):
    env.fake.inject("new_target", before=lambda: env.fake.add_target(1, "iqn.x:other"))
    assert env.helper.create_export("vol-a", "/srv/a.img").tid == 2
    assert [c[3] for c in env.fake.commands("--params", f"Name={IQN_A}")] == ["--tid=1",
                                                                               "--tid=2"]


def test_239_for_lun_0_is_fine_when_it_serves_this_path(env):
    env.fake.inject("new_lun", before=lambda: env.fake.targets[1].luns.update(
        {0: ("/srv/a.img", "fileio")}))
    assert env.helper.create_export("vol-a", "/srv/a.img").tid == 1
    assert env.conf.read_text().count("Lun 0") == 1


def test_lun_0_serving_another_path_fails_and_leaves_the_foreign_target(env):
    env.fake.add_target(5, IQN_A, "/srv/other.img")
    with pytest.raises(exception.TargetError, match="LUN 0 of tid 5 already serves "
                       "/srv/other.img, not /srv/a.img"):
        env.helper.create_export("vol-a", "/srv/a.img")
    assert env.fake.targets[5].luns == {0: ("/srv/other.img", "fileio")}
    assert env.fake.commands("delete") == []  # it added nothing, so it undoes nothing
    assert not env.conf.exists()


def test_target_without_lun_is_completed_not_recreated(env):
    env.fake.add_target(4, IQN_A)  # e.g. an earlier run died after creating it
    assert env.helper.create_export("vol-a", "/srv/a.img").tid == 4
    assert env.fake.commands("--params", f"Name={IQN_A}") == []


def test_failure_midway_rolls_back_and_hides_the_password(env, caplog):
    caplog.set_level(logging.DEBUG)
    env.fake.inject("new_user", "ietd_down")
    with pytest.raises(exception.TargetError) as raised:
        env.helper.create_export("vol-a", "/srv/a.img")
    message = str(raised.value)
    assert message == (f"ietadm could not create target {IQN_A}: ietadm --op exited 145: "
                       "Connection refused. Is ietd running?")
    assert env.fake.targets == {}  # the target it had created is deleted again
    assert env.fake.calls[-1] == ("ietadm", "--op", "delete", "--tid=1")
    assert not env.conf.exists() and env.helper.store.all() == []
    assert "Pw02" not in message and "Pw02" not in caplog.text


def test_failing_config_write_rolls_back_the_live_target(env, config_fixture, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config_fixture.config(group="target", iet_conf=str(blocker / "ietd.conf"))
    with pytest.raises(exception.TargetError, match="could not create target"):
        env.helper.create_export("vol-a", "/srv/a.img")
    assert env.fake.targets == {}


def test_rollback_on_an_existing_target_removes_only_what_it_added(env):
    env.fake.add_target(4, IQN_A)
    env.fake.inject("new_user", "ietd_down")
    with pytest.raises(exception.TargetError):
        env.helper.create_export("vol-a", "/srv/a.img")
    assert 4 in env.fake.targets and env.fake.targets[4].luns == {}
    assert env.fake.commands("delete") == [("ietadm", "--op", "delete", "--tid=4", "--lun=0")]


def test_remove_closes_sessions_before_deleting_the_target(env):
    env.helper.create_export("vol-a", "/srv/a.img")
    sid = env.fake.add_session(1, INITIATOR, cids=(0, 1))
    env.helper.remove_export("vol-a")
    assert env.fake.calls[-4:] == [
        ("ietadm", "--op", "delete", "--tid=1", "--lun=0"),
        ("ietadm", "--op", "delete", "--tid=1", f"--sid={sid}", "--cid=0"),
        ("ietadm", "--op", "delete", "--tid=1", f"--sid={sid}", "--cid=1"),
        ("ietadm", "--op", "delete", "--tid=1")]
    assert env.fake.targets == {}


def test_remove_of_a_target_ietd_no_longer_has_only_cleans_the_config(env):
    env.helper.create_export("vol-a", "/srv/a.img")
    env.fake.restart()  # ietd restarted without reading ietd.conf
    before = len(env.fake.calls)
    env.helper.remove_export("vol-a")
    assert env.fake.calls[before:] == [] and env.conf.read_text() == ""


def test_remove_tolerates_not_found_answers(env):
    env.helper.create_export("vol-a", "/srv/a.img")
    env.fake.inject("delete_lun", "delete_lun.not_found")  # 254
    env.fake.inject("delete_target", "delete_target.not_found",
                    before=lambda: env.fake.targets.clear())  # 254
    env.helper.remove_export("vol-a")
    assert env.helper.store.all() == [] and env.conf.read_text() == ""


def test_remove_that_stays_busy_fails_and_keeps_config_and_record(env, monkeypatch):
    monkeypatch.setattr(iet.time, "sleep", lambda s: None)
    env.helper.create_export("vol-a", "/srv/a.img")
    for _ in range(iet._BUSY_ATTEMPTS):
        env.fake.inject("delete_target", "delete_target.busy")
    with pytest.raises(exception.TargetError, match="tid 1 still has sessions"):
        env.helper.remove_export("vol-a")
    assert IQN_A in env.conf.read_text() and env.helper.export("vol-a")


def test_ensure_export_after_ietd_lost_everything_recreates_it(env):
    first = env.helper.create_export("vol-a", "/srv/a.img")
    env.fake.restart()
    again = env.helper.ensure_export("vol-a")
    assert again.auth_password == first.auth_password and again.lun == 0
    assert env.fake.targets[1].users == [("user01xxxxxxxxxxxxxx", "Pw02xxxxxxxxxxxx")]
    assert env.conf.read_text().count(f"Target {IQN_A}") == 1


def test_ietd_restart_from_the_config_needs_no_ietadm_and_remove_finds_the_new_tid(env):
    env.helper.create_export("vol-a", "/srv/a.img")
    env.helper.create_export("vol-b", "/srv/b.img")
    env.helper.remove_export("vol-a")
    env.fake.restart(env.conf)  # vol-b is now tid 1, its record still says 2
    before = len(env.fake.calls)
    env.helper.ensure_exports()
    assert env.fake.calls[before:] == []
    assert env.fake.targets[1].users == [("user03xxxxxxxxxxxxxx", "Pw04xxxxxxxxxxxx")]
    env.helper.remove_export("vol-b")
    assert env.fake.commands("--op", "delete", "--tid=1") and env.fake.targets == {}


@pytest.mark.parametrize(("iotype", "expected"), [("blockio", "blockio"),
                                                  ("auto", "fileio")])
def test_iotype(env, config_fixture, tmp_path, iotype, expected):
    config_fixture.config(group="target", iscsi_iotype=iotype)
    backing = tmp_path / "a.img"
    backing.write_bytes(b"")
    env.helper.create_export("vol-a", str(backing))
    assert f"Type={expected}" in env.fake.calls[1][-1]
    assert f"Path={backing},Type={expected}\n" in env.conf.read_text()


def test_auto_iotype_picks_blockio_for_block_devices(env, config_fixture, monkeypatch):
    config_fixture.config(group="target", iscsi_iotype="auto")
    monkeypatch.setattr(iet.os, "stat", lambda p: SimpleNamespace(st_mode=stat.S_IFBLK))
    assert env.helper._iotype("/dev/vg0/x") == "blockio"


@pytest.mark.parametrize("path", ["/srv/a b.img", "/srv/a,b.img"])
def test_paths_ietadm_cannot_carry_are_refused_before_anything_runs(env, path):
    with pytest.raises(exception.InvalidInput, match="backing store path .* "
                       "cannot go into IET's configuration"):
        env.helper.create_export("vol-a", path)
    assert env.fake.calls == []


def test_enable_iser_is_refused_clearly(config_fixture):
    config_fixture.config(group="target", enable_iser=True)
    with pytest.raises(exception.InvalidInput, match="ietadm helper cannot export over iSER"):
        registry.target_from_conf(CONF.target, helper="ietadm")


def test_registry_maps_ietadm():
    assert type(registry.target_from_conf(CONF.target, helper="ietadm")) is iet.IetAdm


def test_proc_parsers_tolerate_extra_fields_and_other_targets():
    volumes = iet.parse_volumes(
        "tid:2 name:iqn.x:B\n"
        "\tlun:0 state:0 iotype:blockio iomode:wt blocks:2048 blocksize:512 path:/dev/b\n"
        "tid:1 name:iqn.x:a\n")
    assert volumes["iqn.x:b"].tid == 2 and volumes["iqn.x:b"].luns == {0: "/dev/b"}
    assert volumes["iqn.x:a"].luns == {}
    sessions = iet.parse_sessions(
        "tid:2 name:iqn.x:b\n\tsid:5 initiator:iqn.i\n\t\tcid:0 ip:192.0.2.7 state:active "
        "hd:none dd:none\ntid:1 name:iqn.x:a\n")
    assert sessions == {2: [(5, 0)], 1: []}


def test_set_block_removes_cinder_duplicates_and_keeps_comments_of_the_next_block():
    text = (f"Target {IQN_A}\n    Lun 0 Path=/old,Type=fileio\n\n# next\n"
            "Target iqn.x:keep\n    Lun 0 Path=/k,Type=fileio\n"
            f"target {IQN_A.upper()}\n    None\n    Lun 0 Path=/old,Type=fileio\n")
    assert iet.set_block(text, IQN_A, None) == (
        "\n# next\nTarget iqn.x:keep\n    Lun 0 Path=/k,Type=fileio\n")


def test_real_executor_keeps_the_password_out_of_the_log(env, tmp_path, monkeypatch, caplog):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "ietadm"
    stub.write_text(f"#!{sys.executable}\n")  # succeeds, prints nothing
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    helper = helper_for(env.fake)
    helper.execute = REAL_EXECUTE
    caplog.set_level(logging.DEBUG)
    helper.create_export("vol-a", "/srv/a.img")
    assert "Pw02xxxxxxxxxxxx" not in caplog.text
