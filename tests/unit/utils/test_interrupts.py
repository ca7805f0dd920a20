"""SIGINT/SIGTERM become Interrupted; a rollback or a detach finishes first."""

import json
import os
import signal

import pytest

from hvplug import exception
from hvplug.utils import interrupts
from hvplug.virt import attach, guest_disks, secrets
from hvplug.virt.host import Host


@pytest.fixture
def installed(signal_handlers):
    interrupts.install()


def kill_self(signum):
    os.kill(os.getpid(), signum)  # Python runs the handler before the next line


def secret_uuids(host):
    return {s.UUIDString() for s in host.list_secrets()}


def test_signal_raises_interrupted_naming_it(installed):
    with pytest.raises(interrupts.Interrupted) as err:
        kill_self(signal.SIGTERM)
    assert err.value.signal_name == "SIGTERM"
    assert isinstance(err.value, KeyboardInterrupt)


def test_deferred_finishes_the_block_then_raises_the_first_signal(installed):
    steps = []
    with pytest.raises(interrupts.Interrupted) as err, interrupts.deferred():
        kill_self(signal.SIGINT)
        steps.append("undo half done")
        kill_self(signal.SIGTERM)
        steps.append("undo done")
    assert steps == ["undo half done", "undo done"]
    assert err.value.signal_name == "SIGINT"
    assert interrupts._pending == []


def test_nested_deferred_raises_only_at_the_outermost_end(installed):
    steps = []
    with pytest.raises(interrupts.Interrupted), interrupts.deferred():
        with interrupts.deferred():
            kill_self(signal.SIGTERM)
        steps.append("after the inner block")
    assert steps == ["after the inner block"]


def test_deferred_without_a_signal_raises_nothing(installed):
    with interrupts.deferred():
        pass
    assert interrupts._pending == []


def test_signal_in_a_failing_block_is_not_raised_later_by_another(installed):
    with pytest.raises(ValueError), interrupts.deferred():
        kill_self(signal.SIGINT)
        raise ValueError("the undo failed")
    try:
        with interrupts.deferred():  # a later operation of a long-lived caller
            pass
    except interrupts.Interrupted as exc:  # a KeyboardInterrupt: pytest would stop
        pytest.fail(f"a stale {exc.signal_name} interrupted an unrelated operation")


def test_cli_attach_interrupted_after_libvirt_rolls_back(run_cli, host, guest, make_info,
                                                         signal_handlers, monkeypatch):
    real = Host.attach_device

    def attach_then_signal(self, *args, **kwargs):
        real(self, *args, **kwargs)
        kill_self(signal.SIGTERM)
    monkeypatch.setattr(Host, "attach_device", attach_then_signal)
    rc, out, _ = run_cli("attach", "--domain", guest, "--connection-info", "-",
                         "--bus", "scsi", "--json", stdin=json.dumps(make_info()))
    assert rc == 1
    error = json.loads(out)["error"]
    assert (error["type"], error["exit_code"]) == ("Interrupted", 1)
    assert error["message"] == ("Interrupted by SIGTERM; what was under way was rolled "
                                "back, so nothing is left half-done.")
    assert guest_disks.target_devs(host.domain_xml(guest)) == set()
    assert secret_uuids(host) == set()


def test_cli_detach_interrupted_completes_and_stands(run_cli, host, guest, make_info,
                                                    monkeypatch):
    rc, _, _ = run_cli("attach", "--domain", guest, "--connection-info", "-",
                       "--bus", "scsi", stdin=json.dumps(make_info()))
    assert rc == 0 and len(secret_uuids(host)) == 1
    real = Host.detach_device

    def signal_then_detach(self, *args, **kwargs):
        kill_self(signal.SIGINT)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Host, "detach_device", signal_then_detach)
    rc, out, err = run_cli("detach", "--domain", guest, "--dev", "sda")
    assert rc == 0 and out.startswith(f"Detached sda from domain '{guest}'")
    assert err == ("hvplug: SIGINT arrived after the operation had completed; "
                   "its result stands\n")
    assert guest_disks.target_devs(host.domain_xml(guest)) == set()
    assert secret_uuids(host) == set()  # the secret went too: the detach was complete


def test_cli_signal_after_the_attach_is_done_undoes_nothing(run_cli, host, guest, make_info,
                                                            monkeypatch):
    real = interrupts.commit

    def commit_then_signal():
        real()
        kill_self(signal.SIGTERM)
    monkeypatch.setattr(interrupts, "commit", commit_then_signal)
    rc, out, err = run_cli("attach", "--domain", guest, "--connection-info", "-",
                           "--bus", "scsi", "--json", stdin=json.dumps(make_info()))
    assert rc == 0 and json.loads(out)["dev"] == "sda"
    assert "SIGTERM arrived after the operation had completed" in err
    assert guest_disks.target_devs(host.domain_xml(guest)) == {"sda"}
    assert len(secret_uuids(host)) == 1


def test_cli_gives_the_signal_handlers_back(run_cli, guest):
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    assert run_cli("list", "--domain", guest)[0] == 0
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_finished_operation_does_not_mute_the_next_one(installed):
    interrupts.commit()  # a long-lived caller finished one attach
    interrupts.begin()  # and starts the next one
    try:
        kill_self(signal.SIGINT)  # and is interrupted during its next one
    except interrupts.Interrupted:
        return
    pytest.fail("SIGINT did not interrupt the operation after a committed one")


def test_signal_during_a_rollback_waits_for_it(installed, host, registry, guest, make_info,
                                               fake_libvirt, monkeypatch):
    def refuse(*args):
        raise RuntimeError(fake_libvirt.ISCSI_AUTH_FAILURE)
    fake_libvirt.set_iscsi_login(refuse)
    real, released = secrets.release_secret, []

    def signal_then_release(host_, secret):
        kill_self(signal.SIGINT)
        released.append(real(host_, secret))
        return released[-1]
    monkeypatch.setattr(secrets, "release_secret", signal_then_release)
    with pytest.raises(interrupts.Interrupted):
        attach.attach_volume(host, registry, guest, make_info(), bus="scsi")
    assert released == ["removed"]
    assert secret_uuids(host) == set()


def test_interrupted_error_message():
    exc = exception.Interrupted(signal="SIGTERM", what="nothing is left half-done")
    assert exc.message == "Interrupted by SIGTERM; nothing is left half-done."
    assert exc.exit_code == 1
