"""Target-side guarantees (issue 12, items 5 and 6) against a real tgtd.

Every test here runs its own tgtd (``PrivateTgtd`` of test_tgt_target.py: its
own control port and portal), so the shared tgtd's targets are never
touched, and drives ``hvplug target`` as a subprocess with a config file
pointing at that tgtd, at records and stanzas under tmp_path, and at
``backing_roots = <tmp_path>/vols``.  Volume ids carry a unique hex tag.
"""

import json
import os
import subprocess
import uuid

import pytest

from hvplug.conf import CONF
from hvplug.target.tgt import TgtAdm
from hvplug.target.tgtd_ipc import TgtdIPC
from tests import stack
from tests.functional.helpers import CLI
from tests.functional.test_tgt_target import PrivateTgtd, cleaned_up

PREFIX = "iqn.2010-10.org.openstack:volume-"


@pytest.fixture
def rig(tmp_path, config_fixture):
    """A private tgtd, a config for it, and ``run(*args)`` for ``hvplug target``."""
    stack.require_tgtd()
    vols = tmp_path / "vols"
    vols.mkdir()
    tgtd = PrivateTgtd(tmp_path)
    tgtd.start()
    conf = tmp_path / "hvplug.conf"
    conf.write_text(f"[target]\ntgtd_socket = {tgtd.socket_path}\n"
                    f"iscsi_port = {tgtd.portal_port}\niscsi_ip_address = 127.0.0.1\n"
                    f"volumes_dir = {tmp_path}/volumes\nexports_dir = {tmp_path}/exports\n"
                    f"backing_roots = {vols}\n")
    conf.chmod(0o600)
    config_fixture.config(group="target", tgtd_socket=tgtd.socket_path,
                          iscsi_port=tgtd.portal_port, volumes_dir=str(tmp_path / "volumes"),
                          exports_dir=str(tmp_path / "exports"), backing_roots=[str(vols)])

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([*CLI, "--config-file", str(conf), "target", *args],
                                capture_output=True, text=True, timeout=300, check=False)
        assert "Traceback" not in result.stderr, result.stderr
        assert "unexpected" not in result.stderr, result.stderr
        return result

    class Rig:
        pass
    rig = Rig()
    rig.tgtd, rig.vols, rig.run, rig.ipc = tgtd, vols, run, TgtdIPC(tgtd.socket_path)
    rig.exports = tmp_path / "exports"
    try:
        with cleaned_up(TgtAdm(CONF.target, socket_path=tgtd.socket_path)) as target:
            rig.target = target
            yield rig
    finally:
        tgtd.close()


def tag() -> str:
    return uuid.uuid4().hex[:8]


def served(rig) -> dict[str, str]:
    """tgtd's view: IQN -> backing file of LUN 1."""
    return {t.iqn: t.luns[1].backing_store if 1 in t.luns else None
            for t in rig.ipc.list_targets().values()}


def sparse(path, size: int = 8 << 20) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def test_case_twins_never_share_a_target(rig):
    upper, lower = f"Coll-{tag()}", None
    lower = upper.lower()
    a, b = str(rig.vols / "a.img"), str(rig.vols / "b.img")
    first = rig.run("create-export", "--volume-id", upper, "--path", a, "--size", "8M")
    assert first.returncode == 0, first.stderr
    iqn = json.loads(first.stdout)["data"]["target_iqn"]

    second = rig.run("create-export", "--volume-id", lower, "--path", b, "--size", "8M")
    assert second.returncode == 2 and second.stdout == ""
    assert f"differs only in case from the recorded export {upper!r}" in second.stderr
    assert not os.path.exists(b)
    assert served(rig) == {iqn: a}

    for _ in range(2):  # ensure-exports never flips which file is served
        result = rig.run("ensure-exports")
        assert result.returncode == 0, result.stderr
        assert served(rig) == {iqn: a}
    result = rig.run("remove-export", "--volume-id", lower)
    assert result.returncode == 1 and "No export of volume" in result.stderr
    assert served(rig) == {iqn: a}
    again = rig.run("create-export", "--volume-id", upper, "--path", a)
    assert again.returncode == 0 and json.loads(again.stdout) == json.loads(first.stdout)


def test_twin_records_from_before_the_fix_do_not_flip_or_remove_each_other(rig):
    upper = f"Coll-{tag()}"
    lower = upper.lower()
    a, b = sparse(rig.vols / "a.img"), sparse(rig.vols / "b.img")
    assert rig.run("create-export", "--volume-id", upper, "--path", a).returncode == 0
    record = json.loads((rig.exports / f"{upper}.json").read_text())
    # what an older hvplug let through: a second record with the same IQN
    twin = {**record, "volume_id": lower, "path": b, "auth_username": "twin" + tag(),
            "tid": None}
    (rig.exports / f"{lower}.json").write_text(json.dumps(twin))
    os.chmod(rig.exports / f"{lower}.json", 0o600)
    iqn = record["iqn"]

    for _ in range(2):
        result = rig.run("ensure-exports")
        assert result.returncode == 1
        assert f"already serves {a!r}" in result.stderr and "never replaces" in result.stderr
        assert served(rig) == {iqn: a}
    result = rig.run("remove-export", "--volume-id", lower)
    assert result.returncode == 0, result.stderr
    assert served(rig) == {iqn: a}  # the other volume's target stayed


def test_a_live_target_serving_another_file_is_refused(rig):
    volume_id = f"hvplug-test-{tag()}"
    theirs = sparse(rig.vols / "theirs.img")
    tid = rig.ipc.new_target(None, PREFIX + volume_id, start=500)
    rig.ipc.new_lun(tid, 1, theirs)
    mine = str(rig.vols / "mine.img")
    result = rig.run("create-export", "--volume-id", volume_id, "--path", mine, "--size", "8M")
    assert result.returncode == 2 and result.stdout == ""
    assert f"already serves {theirs!r} (tgtd target tid {tid})" in result.stderr
    assert f"--tid {tid}" in result.stderr
    assert not os.path.exists(mine)
    assert served(rig) == {PREFIX + volume_id: theirs}
    assert not (rig.exports / f"{volume_id}.json").exists()


def test_many_exports_come_back_after_a_tgtd_restart_despite_a_corrupt_record(rig):
    ids = [f"hvplug-test-{tag()}" for _ in range(40)]
    exports = {v: rig.target.create_export(v, sparse(rig.vols / f"{v}.img", 1 << 20))
               for v in ids}
    broken = ids[17]
    bad = rig.exports / f"{broken}.json"
    bad.write_text(bad.read_text()[:50])  # truncated
    empty = ids[23]
    record = json.loads((rig.exports / f"{empty}.json").read_text())
    record["portals"] = []
    (rig.exports / f"{empty}.json").write_text(json.dumps(record))

    rig.tgtd.kill9()
    rig.tgtd.start()
    assert rig.ipc.list_targets() == {}

    result = rig.run("ensure-exports", "--json")
    assert result.returncode == 1
    restored = {row["volume_id"] for row in json.loads(result.stdout)["exports"]}
    assert restored == set(ids) - {broken, empty}
    assert f"Export record '{bad}' is unreadable" in result.stderr
    assert "portals must be a non-empty list" in result.stderr
    assert "2 of 40 export records could not be restored" in result.stderr
    live = served(rig)
    assert live == {exports[v].iqn: exports[v].path for v in restored}

    listed = rig.run("list", "--json")
    assert listed.returncode == 1 and str(bad) in listed.stderr
    assert len(json.loads(listed.stdout)["exports"]) == 38
    shown = rig.run("show", "--volume-id", ids[0], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["path"] == exports[ids[0]].path
    gone = rig.run("remove-export", "--volume-id", ids[1])
    assert gone.returncode == 0 and exports[ids[1]].iqn not in served(rig)
    refused = rig.run("remove-export", "--volume-id", broken)
    assert refused.returncode == 1 and str(bad) in refused.stderr
    bad.unlink()  # the operator's fix, as the message says; the cleanup takes the rest
    (rig.exports / f"{empty}.json").unlink()


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (("--volume-id", "bad\n"), 2, "\\n"),
    (("--path", "/etc/shadow"), 2, "outside every backing root"),
    (("--initiator", "guest"), 2, "is not an iSCSI name"),
    (("--size", "17T"), 2, "is more than the filesystem"),
    (("--size", "99999999999T"), 2, "more than any file can hold"),
])
def test_rejected_creates_leave_no_file_and_no_target(rig, args, code, fragment):
    if "17T" in args and os.statvfs(rig.vols).f_bsize != 4096:
        pytest.skip("17 TiB is only too big for ext4 with 4 KiB blocks")
    values = {"--volume-id": f"hvplug-test-{tag()}", "--path": str(rig.vols / "new.img"),
              "--size": "8M"}
    values.update(zip(args[::2], args[1::2], strict=False))
    result = rig.run("create-export", *[x for kv in values.items() for x in kv])
    assert result.returncode == code and fragment in result.stderr, result.stderr
    assert list(rig.vols.iterdir()) == [] and rig.ipc.list_targets() == {}


def test_a_symlink_to_etc_shadow_is_refused(rig):
    link = rig.vols / "shadow.img"
    link.symlink_to("/etc/shadow")
    result = rig.run("create-export", "--volume-id", f"hvplug-test-{tag()}",
                     "--path", str(link))
    assert result.returncode == 2
    assert "resolves to '/etc/shadow', which is outside every backing root" in result.stderr
    assert rig.ipc.list_targets() == {}


def test_size_grows_a_smaller_file_that_tgtd_then_serves(rig):
    path = rig.vols / "small.img"
    sparse(path, 1 << 20)
    result = rig.run("create-export", "--volume-id", f"hvplug-test-{tag()}",
                     "--path", str(path), "--size", "32M")
    assert result.returncode == 0, result.stderr
    assert f"grew '{path}' from 1048576 to 33554432 bytes" in result.stderr
    assert path.stat().st_size == 32 << 20
    (target,) = rig.ipc.list_targets().values()
    assert abs(target.luns[1].size_mb - (32 << 20) / 10**6) < 1
