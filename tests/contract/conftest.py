"""Fixtures that run each contract scenario against the fake and a real libvirtd.

``lv`` is the libvirt module (``tests.fakelibvirt`` or the real ``libvirt``),
``conn`` a connection from it, and ``scratch`` makes uniquely named guests,
secrets and disk files that are removed afterwards, even when the test fails.
"""

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from hvplug.templates import guest_xml
from tests import fakelibvirt, stack


def _real_libvirt() -> ModuleType:
    problem = stack.libvirt_problem()
    if problem:
        stack.missing(problem)
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # no printing to stderr
    return libvirt


@pytest.fixture(params=["fake", "real"])
def libvirt_conn(request: pytest.FixtureRequest) -> Iterator[tuple[ModuleType, Any]]:
    if request.param == "fake":
        fakelibvirt.reset()
        yield fakelibvirt, fakelibvirt.open(stack.LIBVIRT_URI)
        fakelibvirt.reset()
        return
    lv = _real_libvirt()
    conn = lv.open(stack.LIBVIRT_URI)
    try:
        yield lv, conn
    finally:
        conn.close()


@pytest.fixture
def lv(libvirt_conn: tuple[ModuleType, Any]) -> ModuleType:
    return libvirt_conn[0]


@pytest.fixture
def conn(libvirt_conn: tuple[ModuleType, Any]) -> Any:
    return libvirt_conn[1]


class Scratch:
    """Makes test objects named ``hvplug-test-<hex>`` and removes them all."""

    def __init__(self, lv: ModuleType, conn: Any) -> None:
        self.lv, self.conn = lv, conn
        self.names: set[str] = set()  # guest names and secret usage IDs
        self.secret_uuids: set[str] = set()
        self.paths: list[str] = []

    def name(self) -> str:
        name = f"hvplug-test-{uuid.uuid4().hex}"
        self.names.add(name)
        return name

    def guest(self, persistent: bool = True, running: bool = True) -> Any:
        """A diskless guest; a transient one is always running."""
        xml = guest_xml(self.name())
        if not persistent:
            return self.conn.createXML(xml, 0)
        dom = self.conn.defineXML(xml)
        if running:
            dom.create()
        return dom

    def secret(self, private: bool = False, value: bytes | None = None,
               usage_id: str | None = None) -> Any:
        secret = self.conn.secretDefineXML(secret_xml(usage_id or self.name(), private))
        self.secret_uuids.add(secret.UUIDString())
        if value is not None:
            secret.setValue(value)
        return secret

    def disk_file(self, size: int = 1 << 20) -> str:
        """A sparse file QEMU can open: /tmp itself, not a private pytest dir."""
        fd, path = tempfile.mkstemp(prefix="hvplug-test-", suffix=".img")
        os.close(fd)
        self.paths.append(path)
        os.truncate(path, size)
        os.chmod(path, 0o644)
        return path

    def remove_all(self) -> None:
        problems = self._remove_guests() + self._remove_secrets()
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        assert not problems, f"could not clean up: {problems}"

    def _remove_guests(self) -> list[str]:
        problems = []
        for dom in self.conn.listAllDomains(0):
            if dom.name() in self.names:
                active, persistent = dom.isActive(), dom.isPersistent()
                problems += self._try(dom.destroy, active)
                # A managed save image or snapshot metadata would refuse a plain undefine.
                problems += self._try(lambda d=dom: d.undefineFlags(
                    self.lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | self.lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA), persistent)
        return problems

    def _remove_secrets(self) -> list[str]:
        problems = []
        for secret in self.conn.listAllSecrets(0):
            if secret.UUIDString() in self.secret_uuids or secret.usageID() in self.names:
                problems += self._try(secret.undefine, True)
        return problems

    def _try(self, action: Any, wanted: Any) -> list[str]:
        if not wanted:
            return []
        try:
            action()
        except self.lv.libvirtError as exc:
            if exc.get_error_code() not in (self.lv.VIR_ERR_NO_DOMAIN, self.lv.VIR_ERR_NO_SECRET):
                return [str(exc)]
        return []


def secret_xml(usage_id: str, private: bool = False, uuid_: str | None = None) -> str:
    uuid_el = f"<uuid>{uuid_}</uuid>" if uuid_ else ""
    return (f"<secret ephemeral='no' private='{'yes' if private else 'no'}'>{uuid_el}"
            f"<usage type='iscsi'><target>{usage_id}</target></usage></secret>")


@pytest.fixture
def scratch(libvirt_conn: tuple[ModuleType, Any]) -> Iterator[Scratch]:
    made = Scratch(*libvirt_conn)
    try:
        yield made
    finally:
        made.remove_all()
