"""Export records: a corrupt one is named and skipped, never hides the others."""

import json

import pytest

from hvplug import exception
from hvplug.target.export import Export, ExportStore, check_volume_id

GOOD = {"volume_id": "good", "path": "/var/lib/hvplug/volumes/good.img",
        "iqn": "iqn.2010-10.org.openstack:volume-good", "helper": "tgtadm",
        "portals": ["127.0.0.1:3260"], "lun": 1, "tid": 3, "auth_method": "CHAP",
        "auth_username": "u" * 20, "auth_password": "p" * 16, "iser": False,
        "initiators": []}


def record(**changes) -> dict:
    data = {**GOOD, **changes}
    return {k: v for k, v in data.items() if v is not KeyError}


# (name, file text, what the reason says)
CORRUPT = [
    ("truncated", json.dumps(record(volume_id="bad"))[:40], "not valid JSON"),
    ("invalid-json", "{'volume_id': 'bad'}", "not valid JSON"),
    ("empty", "", "it is empty"),
    ("a-list", json.dumps([record(volume_id="bad")]), "a JSON list, not an object"),
    ("a-string", json.dumps("bad"), "a JSON str, not an object"),
    ("missing-keys", json.dumps(record(volume_id="bad", iqn=KeyError, portals=KeyError)),
     "keys iqn, portals are missing"),
    ("wrong-type-lun", json.dumps(record(volume_id="bad", lun="1")), "lun must be"),
    ("wrong-type-tid", json.dumps(record(volume_id="bad", tid=[1])), "tid must be"),
    ("bool-lun", json.dumps(record(volume_id="bad", lun=True)), "lun must be"),
    ("wrong-type-path", json.dumps(record(volume_id="bad", path=7)), "path must be"),
    ("relative-path", json.dumps(record(volume_id="bad", path="x.img")), "path must be"),
    ("empty-portals", json.dumps(record(volume_id="bad", portals=[])),
     "portals must be a non-empty list"),
    ("portal-not-str", json.dumps(record(volume_id="bad", portals=[3260])), "portals must"),
    ("unknown-helper", json.dumps(record(volume_id="bad", helper="scst")), "helper must be"),
    ("unknown-key", json.dumps(record(volume_id="bad", extra=1)), "unknown keys 'extra'"),
    ("other-id", json.dumps(record(volume_id="someone-else")), "is not its file name's"),
    ("binary", None, "cannot read it"),
]


@pytest.fixture
def store(tmp_path):
    store = ExportStore(tmp_path / "exports")
    store.save(Export(**GOOD))
    return store


def write_bad(store, name, text) -> str:
    path = store.directory / f"{name}.json"
    if text is None:
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("name", "text", "reason"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_a_corrupt_record_is_named_and_skipped(store, name, text, reason):
    path = write_bad(store, name, text)
    with pytest.raises(exception.ExportRecordCorrupt) as err:
        store.load(name)
    message = str(err.value)
    assert repr(path) in message and reason in message, message
    assert err.value.exit_code == 1 and "exports_dir" in message
    assert store.load("good") == Export(**GOOD)  # the others are untouched

    good, bad = store.scan()
    assert good == [Export(**GOOD)]
    assert len(bad) == 1 and repr(path) in bad[0].message
    assert store.all() == [Export(**GOOD)]


def test_the_password_of_a_wrong_record_is_never_shown(store):
    write_bad(store, "bad", json.dumps(record(volume_id="bad", auth_password=["s3cret"])))
    with pytest.raises(exception.ExportRecordCorrupt) as err:
        store.load("bad")
    assert "auth_password must be" in str(err.value) and "s3cret" not in str(err.value)


def test_a_file_name_that_is_no_volume_id_is_reported_by_scan(store):
    (store.directory / "not an id.json").write_text(json.dumps(GOOD))
    good, bad = store.scan()
    assert good == [Export(**GOOD)]
    assert "its file name is not '<volume id>.json'" in bad[0].message


def test_a_directory_named_like_a_record_is_reported(store):
    (store.directory / "dir.json").mkdir()
    good, bad = store.scan()
    assert good == [Export(**GOOD)] and "cannot read it" in bad[0].message


def test_temporary_files_and_other_names_are_not_records(store):
    (store.directory / ".good.json.tmp123").write_text("{")
    (store.directory / "notes.txt").write_text("x")
    assert store.scan() == ([Export(**GOOD)], [])


def test_case_twin(store):
    assert store.case_twin("GOOD") == "good"
    assert store.case_twin("good") is None and store.case_twin("other") is None


@pytest.mark.parametrize("volume_id", ["vol\n", "vol\r\n", "a\nb", "vol "])
def test_a_trailing_newline_is_not_part_of_a_volume_id(volume_id):
    with pytest.raises(exception.InvalidInput) as err:
        check_volume_id(volume_id)
    assert repr(volume_id) in str(err.value) and "\n" not in str(err.value)
