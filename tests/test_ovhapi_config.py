"""OvhClient construction: endpoints and credentials (no network needed)."""

from __future__ import annotations

from pathlib import Path

import ovh
import pytest

from failoverd.errors import OvhAuthError, OvhPermanentError
from failoverd.ovhapi import OvhClient, zones_compatible
from failoverd.policy import ApiPolicy

SECRET = "very-secret-application-secret"
CK = "very-secret-consumer-key"
OVH_VARS = (
    "OVH_ENDPOINT",
    "OVH_APPLICATION_KEY",
    "OVH_APPLICATION_SECRET",
    "OVH_CONSUMER_KEY",
    "OVH_CLIENT_ID",
    "OVH_CLIENT_SECRET",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in OVH_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


async def test_missing_credentials_say_where_they_go() -> None:
    with pytest.raises(OvhAuthError) as info:
        OvhClient.from_policy(ApiPolicy(endpoint="ovh-eu"), credentials={})
    message = str(info.value)
    assert "no OVH credentials" in message
    assert "OVH_APPLICATION_KEY" in message
    assert "api.config_file" in message
    assert "never in the policy" in message


async def test_partial_credentials_name_the_missing_key_never_the_values() -> None:
    with pytest.raises(OvhAuthError) as info:
        OvhClient.from_policy(
            ApiPolicy(endpoint="ovh-eu"),
            credentials={"application_key": "ak", "application_secret": SECRET},
        )
    message = str(info.value)
    assert "lack consumer_key" in message
    assert SECRET not in message
    assert SECRET not in repr(info.value)


async def test_mixed_credential_kinds_are_refused() -> None:
    with pytest.raises(OvhAuthError, match="use one kind"):
        OvhClient.from_policy(
            ApiPolicy(endpoint="ovh-eu"),
            credentials={
                "application_key": "ak",
                "application_secret": SECRET,
                "consumer_key": CK,
                "client_id": "id",
                "client_secret": SECRET,
            },
        )


async def test_oauth2_needs_a_named_endpoint() -> None:
    with pytest.raises(OvhAuthError, match="OAuth2") as info:
        OvhClient.from_policy(
            ApiPolicy(endpoint="http://127.0.0.1:1/1.0"),
            credentials={"client_id": "id", "client_secret": SECRET},
        )
    assert SECRET not in str(info.value)


async def test_credentials_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OVH_APPLICATION_KEY", "ak")
    clean_env.setenv("OVH_APPLICATION_SECRET", SECRET)
    clean_env.setenv("OVH_CONSUMER_KEY", CK)
    client = OvhClient.from_policy(ApiPolicy(endpoint="ovh-eu"))
    try:
        assert SECRET not in repr(client)
        assert CK not in repr(client)
    finally:
        await client.close()


async def test_credentials_from_config_file_for_a_base_url(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = tmp_path / "ovh.conf"
    conf.write_text(
        f"[default]\napplication_key=ak\napplication_secret={SECRET}\nconsumer_key={CK}\n"
    )
    api = ApiPolicy(endpoint="http://127.0.0.1:9/1.0", config_file=conf)
    client = OvhClient.from_policy(api)
    try:
        # The base URL was registered under a derived name the ovh library accepts.
        assert "http://127.0.0.1:9/1.0" in ovh.client.ENDPOINTS.values()
    finally:
        await client.close()


async def test_missing_config_file_is_an_auth_error(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    api = ApiPolicy(endpoint="ovh-eu", config_file=tmp_path / "absent.conf")
    with pytest.raises(OvhAuthError, match="no such file"):
        OvhClient.from_policy(api)


async def test_missing_config_file_is_no_matter_when_the_environment_has_them(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Rehearsing with a copy of the production policy (README): the simulator's
    # credentials exported, api.config_file naming a file that only exists in production.
    clean_env.setenv("OVH_APPLICATION_KEY", "ak")
    clean_env.setenv("OVH_APPLICATION_SECRET", SECRET)
    clean_env.setenv("OVH_CONSUMER_KEY", CK)
    api = ApiPolicy(endpoint="ovh-eu", config_file=tmp_path / "absent.conf")
    client = OvhClient.from_policy(api)
    await client.close()


def test_unreadable_config_file_says_so(clean_env: pytest.MonkeyPatch) -> None:
    # A root-only ovh.conf read by an operator's account: configparser would skip it
    # silently and the message would claim there are no credentials in it. A write-only
    # sysctl stands in for it: reading it is refused even to root, so this holds as root.
    unreadable = Path("/proc/sys/vm/drop_caches")
    assert unreadable.is_file()
    api = ApiPolicy(endpoint="ovh-eu", config_file=unreadable)
    with pytest.raises(OvhAuthError) as info:
        OvhClient.from_policy(api)
    assert str(info.value) == f"api.config_file {unreadable}: Permission denied"


async def test_unknown_endpoint_name() -> None:
    with pytest.raises(OvhPermanentError, match="neither a known endpoint"):
        OvhClient.from_policy(ApiPolicy(endpoint="ovh-mars"), credentials={})


@pytest.mark.parametrize(
    ("regions", "region", "ok"),
    [
        (("eu-west-sbg",), "eu-west-gra", True),
        (("eu-west-sbg",), "eu-west-rbx", True),
        (("eu-west-gra",), "eu-west-gra", True),
        (("eu-west-sbg",), "ca-east-bhs", False),
        (("ca-east-bhs",), "eu-west-gra", False),
        (("ca-east-bhs",), "ca-east-bhs", True),
        (("eu-central-waw",), "eu-west-gra", False),
        ((), "ca-east-bhs", True),  # unknown: OVH's own check decides
    ],
)
def test_zone_compatibility(regions: tuple[str, ...], region: str, ok: bool) -> None:
    assert zones_compatible(regions, region) is ok


async def test_missing_credentials_in_environment_and_files(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(OvhAuthError, match="no OVH credentials found"):
        OvhClient.from_policy(ApiPolicy(endpoint="ovh-eu"))
