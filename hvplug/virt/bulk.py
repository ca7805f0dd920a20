"""Many volumes into (or out of) one domain in one call, in parallel inside.

Every connection_info is checked before anything changes: one bad document
fails the whole call as bad input (exit 2) with nothing done.  Then each
volume is attached (or detached) on its own, in a thread pool of ``[libvirt]
bulk_workers``: one volume's failure is rolled back alone and reported in its
outcome, the others go on.  The domain lock serialises the parts that must
be (device names, libvirt's own hot-plug); portal probes, logins and secret
work overlap.

An interrupt (SIGINT/SIGTERM) stops what has not started, lets what is under
way finish or roll back, and, for an attach, detaches what this call had
attached: an interrupted bulk attach leaves the domain as it found it.

>>> outcomes = attach_volumes(host, registry, "guest1", [info1, info2], bus="scsi")
>>> [o.ok for o in outcomes]
[True, True]
"""

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass

from hvplug import exception
from hvplug.conf import CONF
from hvplug.utils import interrupts
from hvplug.virt import attach, encryption

LOG = logging.getLogger(__name__)


@dataclass
class VolumeOutcome:
    """What happened to one volume of a bulk call."""

    volume: str
    ok: bool
    result: dict | None = None
    error: dict | None = None  # {"type", "message", "exit_code"}

    def to_dict(self) -> dict:
        return asdict(self)


def _error(exc: Exception) -> dict:
    if type(exc).__name__ == "libvirtError":  # a libvirt failure no layer translated
        exc = exception.LibvirtError(action="complete the operation",
                                     reason=exc.get_error_message())  # type: ignore[attr-defined]
    if isinstance(exc, exception.HvplugError):
        return {"type": type(exc).__name__, "message": exc.message, "exit_code": exc.exit_code}
    return {"type": type(exc).__name__, "message": f"unexpected {type(exc).__name__}",
            "exit_code": exception.EXIT_FAILED}


def _checked(registry, infos: list[dict], keys: bool = False,
             passphrase: bytes | None = None) -> None:
    """Every document's outer shape and driver (with ``keys``, an encrypted
    volume's passphrase too), before anything changes."""
    if not infos:
        raise exception.InvalidInput(reason="give at least one connection_info")
    seen: dict[tuple, int] = {}
    for index, info in enumerate(infos, 1):
        try:
            attach.checked_driver(registry, info)
            if keys:
                encryption.passphrase_for(info, passphrase)
        except exception.InvalidInput as exc:
            raise type(exc)(f"connection_info #{index}: {exc.message}") from None
        key = _identity(info)
        if key in seen:
            raise exception.InvalidInput(
                reason=f"connection_info #{index} is the same volume as #{seen[key]} "
                f"({attach.volume_name(info)}); give each volume once")
        seen[key] = index


def _identity(info: dict) -> tuple:
    """What names a volume in a connection_info; equal only for the same one."""
    data = info["data"]
    return (info["driver_volume_type"], repr(info.get("serial")),
            *(repr(data.get(key)) for key in ("volume_id", "target_iqn", "target_lun",
                                              "target_wwn", "device_path")))


def _run(items: list, work, workers: int | None, on_interrupt=None) -> list[VolumeOutcome]:
    """``work(item)`` for each item in a pool; outcomes in the items' order.

    On an interrupt, what has not started is cancelled, what runs finishes,
    then ``on_interrupt(outcomes so far)`` runs before the interrupt goes on.
    """
    workers = max(1, min(workers or CONF.libvirt.bulk_workers, len(items)))
    outcomes: list[VolumeOutcome | None] = [None] * len(items)

    def one(index: int) -> None:
        name, call = work(items[index])
        try:
            outcomes[index] = VolumeOutcome(name, True, call().to_dict())
        except Exception as exc:  # noqa: BLE001 - each volume fails on its own
            LOG.debug("bulk: %s failed: %s", name, exc)
            outcomes[index] = VolumeOutcome(name, False, error=_error(exc))

    interrupts.begin()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="hvplug-bulk")
    futures = [pool.submit(one, index) for index in range(len(items))]
    try:
        wait(futures)
        interrupts.commit()  # every volume is done; a signal from now on undoes nothing
    except BaseException:
        for future in futures:
            future.cancel()
        with interrupts.deferred():
            pool.shutdown(wait=True)
            if on_interrupt is not None:
                on_interrupt([o for o in outcomes if o is not None])
        raise
    pool.shutdown(wait=True)
    return [o for o in outcomes if o is not None]  # every volume has one by now


def attach_volumes(host, registry, domain: str, infos: list[dict], bus: str | None = None,
                   persistent: bool = False, workers: int | None = None,
                   passphrase: bytes | None = None, config_only: bool = False,
                   device: str | None = None) -> list[VolumeOutcome]:
    """Attach every volume of ``infos`` to ``domain``; one outcome per volume.

    ``passphrase``: the LUKS passphrase of the one volume ``infos`` holds;
    encrypted volumes among several take theirs from ``[libvirt]
    volume_key_dir``, each its own.
    """
    if passphrase is not None and len(infos) > 1:
        raise exception.InvalidInput(
            reason="one passphrase cannot open several volumes: attach an encrypted volume "
            "alone with --passphrase-file, or set [libvirt] volume_key_dir, where each "
            "volume has its own key file")
    _checked(registry, infos, keys=True, passphrase=passphrase)
    host.connection()  # opened once, before the threads share it

    def work(info):
        return attach.volume_name(info), lambda: attach.attach_volume(
            host, registry, domain, info, bus=bus, persistent=persistent,
            passphrase=passphrase, config_only=config_only, device=device)
    return _run(infos, work, workers, on_interrupt=lambda done: _undo(
        host, registry, domain, [o for o in done if o.ok]))


def _undo(host, registry, domain: str, attached: list[VolumeOutcome]) -> None:
    for outcome in attached:
        if outcome.result is None or outcome.result.get("promoted"):
            continue  # it was attached before this call
        try:
            attach.detach_volume(host, registry, domain, dev=outcome.result["dev"])
        except Exception:
            LOG.exception("could not roll back %s (%s) of %s", outcome.volume,
                          outcome.result["dev"], domain)


def detach_volumes(host, registry, domain: str, infos: list[dict] | None = None,
                   devs: list[str] | None = None, workers: int | None = None,
                   config_only: bool = False) -> list[VolumeOutcome]:
    """Detach every volume of ``infos`` (or every device of ``devs``) from ``domain``."""
    infos, devs = infos or [], devs or []
    if infos:
        _checked(registry, infos)
    elif not devs:
        raise exception.InvalidInput(reason="give connection_infos or target device names")
    host.connection()

    def work(item):
        if isinstance(item, dict):
            return attach.volume_name(item), lambda: attach.detach_volume(
                host, registry, domain, connection_info=item, config_only=config_only)
        return item, lambda: attach.detach_volume(host, registry, domain, dev=item,
                                                  config_only=config_only)
    return _run([*infos, *devs], work, workers)  # a detach that happened stays done
