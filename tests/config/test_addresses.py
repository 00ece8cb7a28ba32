"""Which addresses an allow entry lets a module connect to: names as names, IP literals against IPs and CIDRs."""

import re

import pytest

from app.config.addresses import parse_address, parse_allow_rule


@pytest.mark.parametrize(
    ("rule", "address", "allowed"),
    [
        ("*.db.example.net", "db1.db.example.net", True),
        ("*.db.example.net", "DB1.DB.Example.NET:3306", True),
        ("*.db.example.net", "a.b.db.example.net", False),  # * stays within one label
        ("*.db.example.net", "db.example.net", False),
        ("*.db.example.net", "db1.db.example.net.evil.org", False),
        ("*.db.example.net", "db1-db.example.net", False),
        ("db-*.example.net", "db-7.example.net", True),
        ("db-legacy-1.example.org:3307", "db-legacy-1.example.org:3307", True),
        ("db-legacy-1.example.org:3307", "db-legacy-1.example.org:3306", False),
        ("db-legacy-1.example.org:3307", "db-legacy-1.example.org", False),
        ("*.db.example.net", "127.20.1.2", False),  # an IP literal is never matched by a name glob
        ("127.20.0.0/16", "127.20.255.1:3306", True),
        ("127.20.0.0/16", "127.21.0.1", False),
        ("127.20.0.0/16", "db1.db.example.net", False),  # a name is never matched by a CIDR (nothing is resolved)
        ("127.20.0.7", "127.20.0.7:3306", True),
        ("127.20.0.7:3307", "127.20.0.7:3306", False),
        ("2001:db8::/32", "[2001:db8::1]:3306", True),
        ("[2001:db8::1]:3306", "[2001:0db8:0::1]:3306", True),
        ("127.0.0.0/8", "[::ffff:127.0.0.1]:3306", False),
        # An entry without a port allows the module's default port (3306 here) only.
        ("127.20.0.0/16", "127.20.255.1:45678", False),
        ("127.20.0.7", "127.20.0.7:45678", False),
        ("*.db.example.net", "db1.db.example.net:45678", False),
        ("2001:db8::/32", "[2001:db8::1]:45678", False),
        ("127.20.0.0/16:45678", "127.20.255.1:45678", True),
        ("127.20.0.0/16:45678", "127.20.255.1", False),
        ("127.20.0.0/16:45678", "127.20.255.1:3306", False),
        ("[2001:db8::/32]:45678", "[2001:db8::1]:45678", True),
        ("[2001:db8::/32]:45678", "[2001:db8::1]:3306", False),
    ],
)
def test_an_allow_entry_matches_names_as_names_and_ip_literals_against_ips(
    rule: str, address: str, allowed: bool
) -> None:
    assert parse_allow_rule(rule).allows(parse_address(address), 3306) is allowed


def test_addresses_are_compared_in_one_form() -> None:
    assert str(parse_address("DB1.Example.NET:03306")) == "db1.example.net:3306"
    assert str(parse_address("[2001:0db8::0001]")) == "[2001:db8::1]"
    assert str(parse_address("db1").with_default_port(3306)) == "db1:3306"


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("127.0.0.0/8:99999", "'127.0.0.0/8:99999' is not a valid CIDR: the port must be a number from 1 to 65535"),
        ("127.0.0.0/8:", "'127.0.0.0/8:' is not a valid CIDR: the port must be a number from 1 to 65535"),
        ("[2001:db8::/32]3306", "'[2001:db8::/32]3306' is not a valid CIDR: expected [IPv6 CIDR]:port"),
        ("127.0.0.1/8:3306", "'127.0.0.1/8:3306' is not a valid CIDR: 127.0.0.1/8 has host bits set"),
    ],
)
def test_a_cidr_with_a_bad_port_is_refused_with_a_sentence(rule: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}"):
        parse_allow_rule(rule)
