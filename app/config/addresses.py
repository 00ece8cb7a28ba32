"""Server addresses given to a module (``host``, ``host:port``, ``[v6]:port``) and the allow rules they must match.

Pure text work: nothing here resolves a name or opens a socket, so a refused address costs no network at all.
"""

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_GLOB_LABEL = re.compile(r"[a-z0-9_*-]{1,63}")
# A last label that resolvers read as a number (10.1.2, 0x7f000001, 2130706433): the whole is an IPv4 address.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_PORT = re.compile(r"[0-9]{1,5}")
MAX_NAME_LENGTH = 253
MAX_ADDRESS_LENGTH = MAX_NAME_LENGTH + len(":65535")
# [::ffff:a.b.c.d] reaches the IPv4 host a.b.c.d: only an allow entry inside this network lets it through.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True, slots=True)
class Address:
    """A server address: a lower-case DNS name or an IP address, and a port if one was given."""

    host: str
    ip: IPAddress | None
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def with_default_port(self, port: int | None) -> "Address":
        """This address, with ``port`` when it names none."""
        return self if self.port is not None or port is None else Address(self.host, self.ip, port)


def parse_address(text: str) -> Address:
    """``host``, ``host:port`` or ``[v6]:port``; ValueError with a sentence for anything else (user@, /db, ?x...)."""
    if len(text) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"the address is longer than {MAX_ADDRESS_LENGTH} characters")
    if "@" in text:  # not repeated: what comes before the @ may be a password
        raise ValueError("the address has a user@ part; a module's DSN gives the user, the target only host[:port]")
    if not text.isascii():  # lower() would make some letters ASCII (the Kelvin sign a k)
        raise ValueError(f"{text!r} is not an address: names are ASCII (write an internationalized one as xn--...)")
    host, port = _split_port(text)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{text!r} is not an address: an IPv6 address goes in brackets, e.g. [2001:db8::1]:3306")
        ip = _ip(host[1:-1], text)
        if ip.version != 6 or ip.scope_id is not None:
            raise ValueError(f"{text!r} is not an address: only IPv6 addresses (without a zone) go in brackets")
        return Address(str(ip), ip, port)
    if ":" in host:
        raise ValueError(f"{text!r} is not an address: write an IPv6 address in brackets, e.g. [2001:db8::1]:3306")
    name = host.lower()
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{text!r} is not an address: expected host, host:port or [IPv6]:port")
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        ip = _ip(name, text)
        if ip.version != 4:
            raise ValueError(f"{text!r} is not an address")
        return Address(str(ip), ip, port)
    return Address(name, None, port)


def _split_port(text: str) -> tuple[str, int | None]:
    if not text:
        raise ValueError("the address is empty")
    if text.startswith("[") and "]" in text:
        end = text.index("]") + 1
        host, rest = text[:end], text[end:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not an address: expected [IPv6]:port")
        return host, _port(rest[1:], f"{text!r} is not an address") if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port, f"{text!r} is not an address")
    return text, None


def _port(text: str, what: str) -> int:
    """``text`` as a port; ValueError opening with ``what`` (what the text it stands in is not) otherwise."""
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what}: the port must be a number from 1 to 65535")
    return int(text)


def _ip(text: str, address: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{address!r} is not an address: {text!r} is not a valid IP address") from None


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One ``allow`` entry: a DNS-name glob, an IP address or a CIDR, with a port for the first two if given."""

    text: str
    pattern: re.Pattern[str] | None = None  # a name glob
    network: IPNetwork | None = None  # an IP address is a network of one
    port: int | None = None

    def allows(self, address: Address, default_port: int | None) -> bool:
        """Whether ``address`` may be connected to under this rule; an address or a rule without a port stands for
        ``default_port`` (the module's, or its driver's), so a rule without one allows that port only."""
        wanted = default_port if self.port is None else self.port
        if (default_port if address.port is None else address.port) != wanted:
            return False
        if self.network is not None:
            ip = address.ip
            if ip is None or ip not in self.network:
                return False
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                # Not by a network that merely spans mapped addresses (::/0): that would allow every IPv4 host.
                return isinstance(self.network, ipaddress.IPv6Network) and self.network.subnet_of(_IPV4_MAPPED)
            return True
        return address.ip is None and self.pattern is not None and self.pattern.match(address.host) is not None


def parse_allow_rule(text: str) -> AllowRule:
    """An ``allow`` entry; ValueError saying what is wrong with it."""
    if "/" in text:
        cidr, port = _split_cidr_port(text)
        try:
            return AllowRule(text, network=ipaddress.ip_network(cidr, strict=True), port=port)
        except ValueError as error:
            raise ValueError(f"{text!r} is not a valid CIDR: {error}") from None
    if "*" not in text:
        try:
            address = parse_address(text)
        except ValueError as error:
            raise ValueError(f"{text!r} is not a DNS name, an IP address or a CIDR: {error}") from None
        if address.ip is not None:
            return AllowRule(text, network=ipaddress.ip_network(address.ip), port=address.port)
        return AllowRule(text, pattern=re.compile(re.escape(address.host) + r"\Z"), port=address.port)
    host, port = _split_port(text)
    labels = host.lower().split(".")
    if not all(_GLOB_LABEL.fullmatch(label) for label in labels) or len(host) > MAX_NAME_LENGTH:
        raise ValueError(f"{text!r} is not a valid name glob: e.g. *.db.example.net or db-*.example.net:3307")
    digits = [label.isdigit() for label in labels if label != "*"]
    if _NUMERIC_LABEL.fullmatch(labels[-1]) or (digits and all(digits)):
        raise ValueError(f"{text!r} is not a valid name glob: a glob matches names; write IP ranges as CIDRs")
    regex = r"\.".join(re.escape(label).replace(r"\*", "[^.]*") for label in labels)
    return AllowRule(text, pattern=re.compile(regex + r"\Z"), port=port)


def _split_cidr_port(text: str) -> tuple[str, int | None]:
    """``10.0.0.0/8``, ``10.0.0.0/8:3306``, ``[2001:db8::/32]:3306``: the CIDR and the port if one is given."""
    if text.startswith("[") and "]" in text:
        end = text.index("]")
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not a valid CIDR: expected [IPv6 CIDR]:port, e.g. [2001:db8::/32]:3306")
        return text[1:end], _port(rest[1:], f"{text!r} is not a valid CIDR") if rest else None
    network, _, length = text.rpartition("/")
    if ":" in length:  # an IPv6 CIDR's colons all stand before the '/'
        length, _, port = length.partition(":")
        return f"{network}/{length}", _port(port, f"{text!r} is not a valid CIDR")
    return text, None
