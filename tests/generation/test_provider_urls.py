"""The FLUX client sends its key only to its own API, downloads samples without
it, follows redirects only within limits and stops reading a sample at the cap
(issue 24, finding 10). Fakes on 127.0.0.1: a foreign origin is another port."""

import pytest

from generation.backends import GenerationRequest, PermanentError, backend_get
from generation.backends.urls import MAX_REDIRECTS, key_allowed

from .fakes import API_KEY, FakeBFL, ForeignServer, running


@pytest.fixture
def bfl(monkeypatch):
    with running(FakeBFL()) as server:
        monkeypatch.setenv("BFL_API_KEY", API_KEY)
        monkeypatch.setenv("BFL_API_BASE_URL", server.base_url)
        yield server


@pytest.fixture
def foreign():
    with running(ForeignServer()) as server:
        yield server


def generate():
    request = GenerationRequest(
        prompt="a red fox",
        seed=5,
        model="flux-2-pro",
        params={"poll_interval": 0.01, "request_timeout": 5.0},
    )
    return backend_get("flux").generate([request])[0]


def keys_seen(server) -> list:
    return [r["headers"].get("x-key") for r in server.requests]


def test_a_polling_url_on_another_host_is_refused_unpolled(bfl, foreign):
    bfl.polling_base = foreign.base_url
    with pytest.raises(PermanentError, match="polling_url outside its API"):
        generate()
    assert foreign.requests == []  # not polled, so no key either
    assert all(k == API_KEY for k in keys_seen(bfl))


def test_the_sample_is_fetched_without_the_key_across_redirects(bfl, foreign):
    bfl.sample_url = f"{foreign.base_url}/hop/{MAX_REDIRECTS - 1}"
    result = generate()
    assert result.data.startswith(b"\x89PNG")
    # MAX_REDIRECTS redirects, then the image.
    assert keys_seen(foreign) == [None] * (MAX_REDIRECTS + 1)


def test_too_many_redirects_are_refused(bfl, foreign):
    bfl.sample_url = f"{foreign.base_url}/hop/{MAX_REDIRECTS + 3}"
    with pytest.raises(PermanentError, match=f"More than {MAX_REDIRECTS} redirects"):
        generate()
    assert len(foreign.requests) == MAX_REDIRECTS + 1
    assert set(keys_seen(foreign)) == {None}


@pytest.mark.parametrize("path", ["/huge", "/huge-unsized"])
def test_an_oversized_sample_is_refused_without_reading_it(
    bfl, foreign, settings, path
):
    settings.PALATE_MAX_UPLOAD_BYTES = 2**20
    foreign.huge_bytes = 300 * 2**20
    bfl.sample_url = f"{foreign.base_url}{path}"
    with pytest.raises(PermanentError, match="over the 1048576-byte limit"):
        generate()
    # The client stopped reading: most of the 300 MiB was never sent (what did
    # go sits in the sockets' buffers).
    assert foreign.sent < 64 * 2**20
    assert keys_seen(foreign) == [None]


@pytest.mark.parametrize(
    "url,allowed",
    [
        ("https://api.bfl.ai/v1/get_result?id=1", True),
        ("https://api.eu.bfl.ai/v1/get_result?id=1", True),
        ("https://api.us1.bfl.ai/v1/get_result?id=1", True),
        ("http://api.bfl.ai/v1/get_result?id=1", False),  # no key in clear text
        ("https://api.bfl.ai:8443/v1/get_result", False),
        ("https://api.bfl.ai.evil.example/v1/get_result", False),
        ("https://evil.example/?u=https://api.bfl.ai", False),
        ("https://bfl.ai.evil.example/", False),
        ("file:///etc/passwd", False),
        ("https://user@evil.example/", False),
    ],
)
def test_which_urls_may_receive_the_key(url, allowed):
    assert key_allowed(url, "https://api.bfl.ai") is allowed


def test_a_test_server_over_http_is_its_own_origin_only():
    base = "http://127.0.0.1:8000"
    assert key_allowed("http://127.0.0.1:8000/v1/get_result", base)
    assert not key_allowed("http://127.0.0.1:8001/v1/get_result", base)
    assert not key_allowed("https://127.0.0.1:8000/v1/get_result", base)
