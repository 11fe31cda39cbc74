"""A connection's network address, which is only ever kept as a keyed hash. Pure."""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings
from django.utils.crypto import salted_hmac

_HASH_SALT = "randomchat.moderation.address"


@functools.cache
def _networks(proxies: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _normal(address: str) -> str:
    """One spelling per address: an IPv4-mapped IPv6 address is its IPv4 one."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(settings.RANDOMCHAT_TRUSTED_PROXIES)))


def client_address(scope: dict) -> str | None:
    """The socket's peer, or, while that is a trusted proxy, the X-Forwarded-For entry it added
    (the last one); a chain of trusted proxies is walked from the right."""
    client = scope.get("client")
    if not client:
        return None
    address = _normal(str(client[0]))
    hops = [
        _normal(hop)
        for name, value in scope.get("headers") or ()
        if name.lower() == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
        if hop.strip()
    ]
    while hops and _trusted(address):
        address = hops.pop()
    return address


def address_hash(address: str | None) -> str | None:
    """HMAC-SHA256 of the address, keyed from RANDOMCHAT_ADDRESS_KEY (else SECRET_KEY)."""
    if address is None:
        return None
    secret = settings.RANDOMCHAT_ADDRESS_KEY or settings.SECRET_KEY
    return salted_hmac(_HASH_SALT, address, secret=secret, algorithm="sha256").hexdigest()
