"""Tests for kit.netguard: which addresses an outbound request (a webhook) may reach."""

from __future__ import annotations

import ipaddress

import pytest

from aihub_billing.kit.netguard import (
    NonPublicTarget,
    is_public_address,
    refused_host,
    resolve_public,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.10",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "198.18.0.1",  # benchmarking
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "::7f00:1",  # IPv4-compatible (deprecated)
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "::1",
        "[::ffff:7f00:1]",
        "169.254.169.254",
        "192.168.0.1",
        "localhost",
        "LOCALHOST",
        "localhost.",
        "api.localhost",
        "localhost.localdomain",
        "ip6-localhost",
    ],
)
def test_refused_hosts(host: str) -> None:
    reason = refused_host(host)
    assert reason is not None and "not public" in reason


@pytest.mark.parametrize("host", ["hooks.example.com", "8.8.8.8", "[2606:4700::1111]", "local"])
def test_hosts_checked_later(host: str) -> None:
    """Public literals pass; names pass too (they are resolved, and checked, when used)."""
    assert refused_host(host) is None


async def test_resolve_public_refuses_a_name_with_any_private_address() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 443)
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(NonPublicTarget, match=r"10\.0\.0\.7"):
        await resolve_public("hooks.example.com", 443, resolve=resolve)


async def test_resolve_public_gives_the_addresses() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "2606:4700::1111", "93.184.216.34"]

    addresses = await resolve_public("hooks.example.com", 80, resolve=resolve)
    assert [str(a) for a in addresses] == ["93.184.216.34", "2606:4700::1111"]


async def test_resolve_public_checks_literals_without_resolving() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise AssertionError("a literal is not resolved")

    assert [str(a) for a in await resolve_public("8.8.8.8", 80, resolve=resolve)] == ["8.8.8.8"]
    with pytest.raises(NonPublicTarget):
        await resolve_public("127.0.0.1", 80, resolve=resolve)
    with pytest.raises(NonPublicTarget):
        await resolve_public("localhost", 80, resolve=resolve)


async def test_resolve_public_may_allow_private_addresses() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    found = await resolve_public("hooks.example.com", 80, resolve=resolve, allow_private=True)
    assert [str(a) for a in found] == ["127.0.0.1"]


async def test_the_system_resolver_answers_for_loopback_names() -> None:
    """The default resolver (loop.getaddrinfo): `localhost` is refused once resolved too."""
    from aihub_billing.kit.netguard import system_resolve

    assert "127.0.0.1" in await system_resolve("127.0.0.1", 80)
