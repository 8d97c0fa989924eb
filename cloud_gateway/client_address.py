"""The address a request came from, seen through the reverse proxies the gateway trusts.

Only when the peer is one of ``trusted_proxies`` does ``X-Forwarded-For`` count: it is read
from the right (each proxy appends the address it heard from), skipping trusted proxies, and
the first address that is not one is the client's. Anything a client wrote further left is
its own claim and is never used. A header that cannot be read leaves the peer's address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from agata_common.networks import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
FORWARDED_FOR = "X-Forwarded-For"
MAX_HOPS = 32


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    """Decides a request's client address given the trusted proxies."""

    def __init__(self, trusted: Iterable[Network]) -> None:
        self.trusted = tuple(trusted)

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def of(self, request: web.Request) -> str:
        """The client's address: the peer's, or the one its trusted proxies forwarded."""
        peer_text = request.remote or "?"
        peer = _address(peer_text)
        if peer is None or not self._is_trusted(peer):
            return peer_text
        hops = [hop for header in request.headers.getall(FORWARDED_FOR, [])
                for hop in header.split(",")]
        if not hops or len(hops) > MAX_HOPS:
            return peer_text
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return peer_text
            client = address
            if not self._is_trusted(address):
                break
        return str(client)
