"""The host-wide scan: shared between threads, and its cache of unchanged documents."""

import os
import threading

import pytest

from hvplug.virt import domain_scan
from hvplug.virt.domain_scan import DocumentCache, DomainDocument, DomainScanner


class CountingScanner(DomainScanner):
    """A scanner whose scans are counted and can be held at their start."""

    def __init__(self):
        super().__init__(type("FakeHost", (), {"uri": "test:///default"})())
        self.scans = 0
        self.started = threading.Event()
        self.go_on = threading.Event()
        self.go_on.set()

    def _scan(self):
        self.scans += 1
        number = self.scans
        self.started.set()
        assert self.go_on.wait(5)
        return [DomainDocument("d", "live", f"<domain>scan {number}</domain>")]


def test_a_scan_that_began_before_the_call_is_not_used():
    scanner = CountingScanner()
    scanner.go_on.clear()
    first = threading.Thread(target=scanner.documents)
    first.start()
    assert scanner.started.wait(5)  # scan 1 is under way
    result = {}
    second = threading.Thread(target=lambda: result.setdefault("docs", scanner.documents()))
    second.start()
    scanner.go_on.set()
    first.join(5)
    second.join(5)
    assert scanner.scans == 2
    assert result["docs"][0].xml == "<domain>scan 2</domain>"


def test_callers_that_wait_together_share_the_next_scan():
    scanner = CountingScanner()
    scanner.go_on.clear()
    first = threading.Thread(target=scanner.documents)
    first.start()
    assert scanner.started.wait(5)
    results = []
    waiters = [threading.Thread(target=lambda: results.append(scanner.documents()))
               for _ in range(4)]
    for waiter in waiters:
        waiter.start()
    scanner.go_on.set()
    first.join(5)
    for waiter in waiters:
        waiter.join(5)
    assert len(results) == 4
    assert {docs[0].xml for docs in results} == {"<domain>scan 2</domain>"}
    assert scanner.scans == 2  # one for the first caller, one for the four


def test_a_failed_scan_lets_the_next_caller_scan_again():
    scanner = CountingScanner()
    scanner._scan = lambda: (_ for _ in ()).throw(RuntimeError("libvirtd went away"))
    with pytest.raises(RuntimeError):
        scanner.documents()
    scanner._scan = lambda: [DomainDocument("d", "live", "<domain/>")]
    assert scanner.documents()[0].xml == "<domain/>"


@pytest.fixture
def files(tmp_path, monkeypatch):
    """libvirtd's per-domain files, in a tmp dir."""
    monkeypatch.setattr(domain_scan, "_QEMU_SYSTEM_FILES",
                        {"live": str(tmp_path / "run-{}.xml"),
                         "config": str(tmp_path / "etc-{}.xml")})
    return tmp_path


def rewrite(path, text: str) -> None:
    """As libvirtd saves: a new file renamed over the old one."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def test_a_document_is_reused_while_its_file_is_unchanged(files):
    cache = DocumentCache("qemu:///system")
    rewrite(files / "run-g.xml", "<domstatus/>")
    stamp = cache.stamp("g", "live")
    docs = [DomainDocument("g", "live", "<domain/>")]
    cache.put(("u", "live"), stamp, cache.stamp("g", "live"), docs)
    assert cache.get(("u", "live"), cache.stamp("g", "live")) is docs
    rewrite(files / "run-g.xml", "<domstatus/>")  # same size, new inode and mtime
    assert cache.get(("u", "live"), cache.stamp("g", "live")) is None


def test_a_file_that_changed_during_the_fetch_is_not_cached(files):
    cache = DocumentCache("qemu:///system")
    rewrite(files / "etc-g.xml", "<domain/>")
    before = cache.stamp("g", "config")
    rewrite(files / "etc-g.xml", "<domain><devices/></domain>")
    cache.put(("u", "config"), before, cache.stamp("g", "config"), ["stale"])
    assert cache.get(("u", "config"), cache.stamp("g", "config")) is None
    assert cache.get(("u", "config"), before) is None


def test_no_cache_without_a_file_another_uri_or_a_ttl(files, config_fixture):
    assert DocumentCache("qemu:///system").stamp("absent", "live") is None
    rewrite(files / "run-g.xml", "<domstatus/>")
    assert DocumentCache("qemu+ssh://other/system").stamp("g", "live") is None
    assert DocumentCache("qemu:///system").stamp("g", "snapshots") is None
    config_fixture.config(group="libvirt", domain_scan_cache_ttl=0)
    assert DocumentCache("qemu:///system").stamp("g", "live") is None


def test_an_entry_older_than_the_ttl_is_fetched_again(files, config_fixture, monkeypatch):
    cache = DocumentCache("qemu:///system")
    rewrite(files / "run-g.xml", "<domstatus/>")
    stamp = cache.stamp("g", "live")
    cache.put(("u", "live"), stamp, stamp, ["docs"])
    now = domain_scan.time.monotonic()
    monkeypatch.setattr(domain_scan.time, "monotonic", lambda: now + 61)
    assert cache.get(("u", "live"), stamp) is None
    config_fixture.config(group="libvirt", domain_scan_cache_ttl=120)
    assert cache.get(("u", "live"), stamp) == ["docs"]
