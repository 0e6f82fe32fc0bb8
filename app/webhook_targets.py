"""Where webhooks may send: every address a target's host resolves to must lie in an allowed network
and in no refused one. By default everything is allowed (plant LANs use private ranges) except
loopback, link-local (which holds the cloud metadata address 169.254.169.254), unspecified, multicast
and the cloud metadata addresses: the service must not be a way into itself or its host. The check runs
when a webhook is registered and again before every send, after name resolution, so a name that later
resolves elsewhere is caught too."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALL_NETWORKS = ("0.0.0.0/0", "::/0")
REFUSED_BY_DEFAULT = (
    "127.0.0.0/8", "::1/128",  # loopback: the service itself, databases and caches on the host
    "0.0.0.0/8", "::/128",  # unspecified: reaches the host on many systems
    "169.254.0.0/16", "fe80::/10",  # link-local, with the cloud metadata service 169.254.169.254
    "fd00:ec2::254/128", "100.100.100.200/32",  # other clouds' metadata services
    "224.0.0.0/4", "ff00::/8",  # multicast
)


class RefusedTarget(InvalidInput):
    """A webhook URL whose host is, or resolves to, an address the service does not send to."""

    reason = "refused_target"


def parse_networks(values: Iterable[str], what: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


@dataclass(frozen=True)
class TargetPolicy:
    allowed: tuple[Network, ...]
    refused: tuple[Network, ...]

    @classmethod
    def of(cls, allowed: Sequence[str] = ALL_NETWORKS, refused: Sequence[str] = REFUSED_BY_DEFAULT
           ) -> TargetPolicy:
        return cls(parse_networks(allowed, "allowed networks"), parse_networks(refused, "refused networks"))

    def permits(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        return (any(address in n for n in self.allowed if n.version == address.version)
                and not any(address in n for n in self.refused if n.version == address.version))

    def check(self, url: str, *, resolve_required: bool) -> None:
        """Raise RefusedTarget when ``url``'s host is or resolves to an address not permitted. A name
        that does not resolve passes when ``resolve_required`` is False (registration: the plant's DNS
        may know it later) and is refused when True (sending)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = resolve(host, port)
        except ValueError as exc:  # a port beyond 65535, a host no resolver can spell (UnicodeError)
            raise RefusedTarget(f"webhook url {url!r} names no host and port to connect to: {exc}") from None
        except OSError as exc:
            if resolve_required:
                raise RefusedTarget(f"webhook host {host!r} does not resolve: {exc}") from None
            return
        for address in addresses:
            if not self.permits(address):
                raise RefusedTarget(
                    f"webhook host {host!r} is {address}, in a network the service does not send to "
                    "(loopback, link-local, metadata, unspecified or multicast; see "
                    "INSPECT_WEBHOOK_REFUSED_NETWORKS and INSPECT_WEBHOOK_ALLOWED_NETWORKS)")


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` stands for, as the HTTP client would connect to it (numeric forms such as
    ``0x7f000001`` or ``127.1`` included: the resolver reads them the way the connection would)."""
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(literal, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
