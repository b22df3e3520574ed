"""Which network addresses an outbound request to a URL a user gave (a webhook) may reach:
public ones only, not loopback, private, link-local, multicast or reserved ranges (SSRF).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as strings; the default asks the system.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Names that mean this machine whatever DNS says (RFC 6761 `.localhost`, /etc/hosts habits).
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NOT_PUBLIC = "is not public (loopback, private, link-local, multicast or reserved)"


class NonPublicTarget(ValueError):
    """The host is, or resolves to, an address outbound requests may not reach."""


def is_public_address(address: IPAddress) -> bool:
    """True for a globally routable unicast address; IPv4 embedded in IPv6 (mapped, NAT64,
    6to4) is judged by the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def ip_literal(host: str) -> IPAddress | None:
    """The address when `host` (a URL's host, IPv6 with or without brackets) is a literal."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refused_host(host: str) -> str | None:
    """Why a URL with this host may not be a target, or None when it may be: a public literal,
    or a name (which `resolve_public` checks again when it is used)."""
    address = ip_literal(host)
    if address is not None:
        return None if is_public_address(address) else f"{address} {_NOT_PUBLIC}"
    name = host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"{name} is this machine: not public"
    return None


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (A and AAAA)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_public(
    host: str,
    port: int,
    *,
    resolve: Resolver = system_resolve,
    allow_private: bool = False,
) -> list[IPAddress]:
    """The addresses to connect to for `host`, in the resolver's order without repeats.

    Raises `NonPublicTarget` when any of them is not public (unless `allow_private`), and
    `OSError` (socket.gaierror) when the name does not resolve.
    """
    literal = ip_literal(host)
    if literal is None and not allow_private:
        reason = refused_host(host)
        if reason is not None:
            raise NonPublicTarget(reason)
    found = [literal] if literal is not None else [_parse(a) for a in await resolve(host, port)]
    addresses = list(dict.fromkeys(found))
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                where = (
                    f"{address}" if literal is not None else f"{host} resolves to {address}, which"
                )
                raise NonPublicTarget(f"{where} {_NOT_PUBLIC}")
    return addresses


def _parse(address: str) -> IPAddress:
    # getaddrinfo gives IPv6 link-local addresses with a zone ("fe80::1%eth0").
    return ipaddress.ip_address(address.split("%", 1)[0])
