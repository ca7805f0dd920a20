"""ISEClient against the simulated ISE over real HTTP: transport, retries,
fail-over, bounded polls, and the password kept out of every message."""

import logging
import time

import pytest

from hvplug import exception
from hvplug.conf import backends
from hvplug.drivers.xio.client import ISEClient
from tests.unit.drivers.xio import PASSWORD, SimulatedISE, load_config, write_config


@pytest.fixture
def ise(tmp_path):
    sim = SimulatedISE(tmp_path / "ise").start()
    yield sim
    sim.stop()


@pytest.fixture
def make_client(ise, tmp_path):
    def make(**options) -> ISEClient:
        load_config(write_config(tmp_path / "hvplug.conf", ise.port, **options))
        return ISEClient(backends.backend_conf("ise1"))
    return make


@pytest.fixture
def client(make_client):
    return make_client()


def test_query_finds_the_array_and_both_controllers(client, ise):
    assert client.array.globalid == ise.array.gid
    assert "49006" in client.array.capabilities
    assert client.controllers == ["127.0.0.1", "127.0.0.2"]


def test_parameters_are_url_encoded(client, ise):
    name = "vol a&b=c+d%20/é"
    resp = client.post(client.array_path("volumes"), {"name": name, "size": "1"})
    assert resp.status == 201
    assert resp.location.endswith(next(iter(ise.state()["volumes"])))
    assert ise.volume_names() == [name]
    found = client.get(client.array_path("volumes"), name=name)
    assert found.status == 200
    assert found.root.find("volume/name").text == name


def test_self_and_content_location_urls_are_followed(client):
    resp = client.post(client.array_path("volumes"), {"name": "v", "size": "1"})
    vol = client.get(resp.location).root.find("volume")
    assert client.get(vol.get("self")).root.find("volume/name").text == "v"


def test_wrong_password_is_a_clear_error_without_the_password(make_client):
    client = make_client(san_password="not-the-" + PASSWORD)
    with pytest.raises(exception.ISEAuthFailed) as err:
        client.array  # noqa: B018 - the first request
    assert "san_password" in err.value.message
    assert PASSWORD not in err.value.message
    assert err.value.exit_code == exception.EXIT_FAILED


def test_http_500_is_retried_then_succeeds(client, ise):
    client.array  # noqa: B018
    ise.fault(http500=3)  # 2 tries on the primary fail, the secondary's 2nd answers
    assert client.get(client.array_path("volumes"), name="x").status == 404
    assert ise.fault()["http500"] == 0
    assert client.controllers[0] == "127.0.0.2"


def test_http_500_retries_are_bounded_and_the_error_is_clear(client, ise):
    client.array  # noqa: B018
    ise.fault(http500=100)
    with pytest.raises(exception.ISEConnectionFailed) as err:
        client.get(client.array_path("volumes"))
    # 2 tries on each of the two controllers, no more
    assert ise.fault()["http500"] == 96
    assert "HTTP 500" in err.value.message
    assert "127.0.0.1, 127.0.0.2" in err.value.message
    assert "ise_connection_retries" in err.value.message


def test_primary_down_fails_over_to_the_secondary(client, ise):
    assert client.array.globalid == ise.array.gid  # /query names the secondary
    ise.fault(primary_down=1)
    resp = client.post(client.array_path("volumes"), {"name": "v", "size": "1"})
    assert resp.status == 201
    assert client.controllers == ["127.0.0.2", "127.0.0.1"]
    assert ise.volume_names() == ["v"]


def test_primary_down_before_the_first_query_is_a_clear_error(client, ise):
    ise.fault(primary_down=1)
    with pytest.raises(exception.ISEConnectionFailed, match="127.0.0.1"):
        client.array  # noqa: B018 - the secondary is only known from /query


def test_unreachable_array_gives_up_after_the_retries(make_client, ise):
    client = make_client(ise_connection_retries=3, ise_retry_interval=0.05)
    ise.stop()
    started = time.monotonic()
    with pytest.raises(exception.ISEConnectionFailed) as err:
        client.array  # noqa: B018
    assert time.monotonic() - started < 5
    assert "tried 3 times" in err.value.message
    assert PASSWORD not in err.value.message


def test_slow_answer_past_the_timeout_does_not_create_twice(make_client, ise):
    client = make_client(ise_request_timeout=0.3)
    client.array  # noqa: B018
    ise.fault(slow=1.0)  # the volume is made, the answer comes after the timeout

    def exists():
        found = client.get(client.array_path("volumes"), name="v")
        return found if found.status == 200 else None
    resp = client.post(client.array_path("volumes"), {"name": "v", "size": "1"},
                       recheck=exists)
    assert resp.status == 200
    assert ise.volume_names() == ["v"]


def test_slow_get_is_retried_within_a_timeout(make_client, ise):
    client = make_client(ise_request_timeout=0.3)
    client.array  # noqa: B018
    ise.fault(slow=1.0)
    started = time.monotonic()
    assert client.get(client.array_path("volumes"), name="x").status == 404
    assert time.monotonic() - started < 1.0


def test_not_in_a_valid_state_is_retried(client, ise):
    resp = client.post(client.array_path("volumes"), {"name": "v", "size": "1"})
    time.sleep(0.2)
    ise.fault(invalid_state=3)
    resp = client.post(resp.location, {"name": "s", "type": "snapshot"})
    assert resp.status == 202
    assert ise.fault()["invalid_state"] == 0


def test_not_in_a_valid_state_retries_are_bounded(make_client, ise):
    client = make_client(ise_completion_retries=3)
    resp = client.post(client.array_path("volumes"), {"name": "v", "size": "1"})
    time.sleep(0.2)
    ise.fault(invalid_state=10)
    with pytest.raises(exception.ISETimeout) as err:
        client.post(resp.location, {"name": "s", "type": "snapshot"})
    assert "3 polls" in err.value.message
    assert ise.fault()["invalid_state"] == 7


def test_wait_is_bounded(client):
    calls = []
    with pytest.raises(exception.ISETimeout) as err:
        client.wait(lambda: calls.append(1) and False, "finish", lambda: "still busy")
    assert len(calls) == 100
    assert "still busy" in err.value.message


def test_the_password_is_never_logged(client, ise, caplog):
    caplog.set_level(logging.DEBUG)
    ise.fault(http500=1)
    client.post(client.array_path("volumes"), {"name": "v", "size": "1"})
    client.get(client.array_path("volumes"), name="v")
    assert caplog.records
    assert PASSWORD not in caplog.text


def test_a_bad_san_ip_fails_when_the_backend_loads(tmp_path):
    load_config(write_config(tmp_path / "c.conf", 1, san_ip="no such host!"))
    with pytest.raises(exception.ConfigFileError, match=r"\[ise1\] san_ip"):
        backends.backend_conf("ise1")


def test_san_ip_is_required(tmp_path):
    load_config(write_config(tmp_path / "c.conf", 1, san_ip=None))
    with pytest.raises(exception.ISEConfigError, match="san_ip"):
        ISEClient(backends.backend_conf("ise1"))
