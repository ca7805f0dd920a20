"""``hvplug reconcile``: the one place that repairs secrets.

Every other command refuses to guess; reconcile looks at the whole host and
returns it to a state where each volume is either fully attached or fully
gone:

- an **orphan**: a secret hvplug created that nothing libvirt may start
  needs any more (an attach killed before its disk was added, a live-only
  attach whose guest restarted, a disk moved away by ``blockcopy
  --pivot``) is removed, under the usage's lock, after counting its users
  again;
- a **stale lock file** (a process killed while holding it) is removed;
- a **missing secret**: a disk (any layer, live, persistent or in a
  managed save image) that references a secret, by uuid or by usage, that
  does not exist is reported, and re-created when a ``connection_info`` of
  that volume is given (its password proven by a login first).

Secrets hvplug did not create are never touched.

>>> report = reconcile(host, registry, dry_run=True)
>>> [f.to_dict() for f in report.findings]
"""

import logging
from dataclasses import asdict, dataclass, field

from lxml import etree

from hvplug import exception
from hvplug.utils import locks
from hvplug.virt import guest_disks, secrets

LOG = logging.getLogger(__name__)


@dataclass
class Finding:
    """One thing reconcile found, and what it did about it."""

    kind: str  # "orphan-secret" or "missing-secret"
    secret_uuid: str | None  # the secret (or the uuid the disk names)...
    secret_usage: str | None  # ...and its usage id, or the usage the disk names
    action: str  # removed, would remove, re-created as U, would re-create, not repaired
    ok: bool  # the host is right about this thing after the run
    domain: str | None = None
    where: str | None = None
    dev: str | None = None
    source: str | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    stale_locks_removed: int = 0  # lock files left by killed processes

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)


def check_info(registry, info: dict) -> None:
    """A given connection_info's shape and driver, checked before anything runs."""
    from hvplug.virt.attach import checked_driver
    checked_driver(registry, info)


def reconcile(host, registry, domain: str | None = None, dry_run: bool = False,
              connection_infos: list[dict] | None = None) -> Report:
    """Find (and unless ``dry_run``, repair) orphan and missing secrets.

    ``domain`` limits the search for missing secrets to that domain's disks;
    orphans belong to no domain and are looked for host-wide.
    """
    if domain is not None:
        host.domain_info(domain)  # DomainNotFound, naming it, before anything else
    report = Report()
    documents = host.domain_documents()
    _missing(host, registry, documents, domain, dry_run, connection_infos or [], report)
    _orphans(host, documents, dry_run, report)
    if not dry_run:
        report.stale_locks_removed = locks.sweep()
    return report


# -- missing secrets -------------------------------------------------------
def _secret_layers(documents, domain):
    """``(doc, dev, layer)`` of every disk layer that references a secret."""
    for doc in documents:
        if domain is not None and doc.domain != domain:
            continue
        root = etree.fromstring(doc.xml.encode())
        for element in root.iter("disk"):
            dev = next(iter(element.xpath("./target/@dev")), None)
            for _, _, layer in guest_disks.layers(element):
                if layer.auth_secret_uuid or layer.auth_secret_usage:
                    yield doc, dev, layer


def _exists(host, layer, cache: dict) -> bool:
    key = (layer.auth_secret_uuid, layer.auth_secret_type, layer.auth_secret_usage)
    if key not in cache:
        if layer.auth_secret_uuid:
            cache[key] = host.secret_exists(layer.auth_secret_uuid)
        else:
            cache[key] = host.find_secret(layer.auth_secret_type or "iscsi",
                                          layer.auth_secret_usage) is not None
    return cache[key]


def _missing(host, registry, documents, domain, dry_run, infos, report) -> None:
    cache: dict = {}
    done: dict = {}  # one repair per lost secret, however many disks use it
    for doc, dev, layer in _secret_layers(documents, domain):
        if _exists(host, layer, cache):
            continue
        finding = Finding("missing-secret", layer.auth_secret_uuid, layer.auth_secret_usage,
                          "not repaired", False, doc.domain, doc.where, dev,
                          layer.source_name or layer.source_path)
        key = (layer.auth_secret_uuid, layer.auth_secret_usage)
        if key not in done:
            done[key] = _repair(host, registry, layer, infos, dry_run)
        finding.action, finding.ok, finding.detail = done[key]
        report.findings.append(finding)


def _repair(host, registry, layer, infos, dry_run) -> tuple[str, bool, str]:
    """``(action, ok, detail)`` for a disk layer whose secret is lost."""
    match = _matching_info(registry, layer, infos)
    if match is None:
        return ("not repaired", False,
                ("no --connection-info of this volume was given; pass the volume's "
                "connection_info (with its CHAP password) to re-create the secret"))
    driver, info = match
    if dry_run:
        return "would re-create", False, "dry run: nothing was changed"
    operation = f"re-create the secret of {layer.source_name}"
    try:
        with locks.all_of(driver.lock_names(info), operation):
            uuid = driver.recreate_secret(info, layer.source_name, uuid=layer.auth_secret_uuid)
    except exception.HvplugError as exc:
        return "not repaired", False, exc.message
    if uuid is None:
        return "not repaired", False, "the given connection_info has no CHAP credentials"
    return f"re-created as {uuid}", True, ""


def _matching_info(registry, layer, infos):
    for info in infos:
        driver = registry.driver_for(info)
        if driver.is_same_volume(layer, info):
            return driver, info
    return None


# -- orphans ---------------------------------------------------------------
def _orphans(host, documents, dry_run, report) -> None:
    for secret, conf in secrets.owned_secrets(host):
        ref = secrets.SecretRef.of(conf)
        if any(secrets.references(doc.xml, ref) for doc in documents):
            continue  # a candidate only when the first scan found no user
        report.findings.append(_remove_orphan(host, secret, conf, dry_run))


def _remove_orphan(host, secret, conf, dry_run) -> Finding:
    finding = Finding("orphan-secret", conf.uuid, conf.usage_id, "would remove", True,
                      source=conf.usage_id,
                      detail="hvplug created it and nothing libvirt may start needs it")
    if dry_run:
        finding.detail += "; dry run: nothing was changed"
        return finding
    name = locks.secret_lock_name(conf.usage_type, conf.usage_id)
    try:
        with locks.named(name, f"reconcile: remove orphan secret {conf.uuid}"):
            outcome = secrets.release_secret(host, secret)  # counts the users again
    except exception.HvplugError as exc:
        finding.action, finding.ok, finding.detail = "not removed", False, exc.message
        return finding
    finding.action = outcome
    if outcome != "removed":
        finding.detail = "a user appeared since the scan"
    return finding
