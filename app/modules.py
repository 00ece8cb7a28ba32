"""Modules: targets without an address, made into one target per address a probe names, where allowed."""

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from app.addresses import Address, AllowRule, parse_address

if TYPE_CHECKING:
    from app.config import Target

# What a module's DSN writes for the probed server's host[:port].
ADDRESS = "{address}"
# The host of a module's DSN until a probe names one: no server answers to it (.invalid is reserved, RFC 2606).
ADDRESS_PLACEHOLDER = "sqlprobe-address.invalid"


class ModuleRequestError(Exception):
    """A module probe that cannot be made; the message is the answer to the client."""


class UnknownModule(ModuleRequestError):
    """The request names a module that targets.yml does not define."""


class InvalidAddress(ModuleRequestError):
    """The target of a module probe is not a plain address."""


class AddressNotAllowed(ModuleRequestError):
    """The address is neither in the module's inventory nor matched by its allow list."""


@dataclass(frozen=True, slots=True)
class Module:
    """One module of targets.yml, compiled: its target template and where it may connect."""

    name: str
    template: "Target"  # the module's settings, its URL's host a placeholder
    default_port: int | None
    allow: tuple[AllowRule, ...]
    inventory: tuple[str, ...]  # absolute glob patterns of file_sd files
    max_targets: int

    @property
    def display_dsn(self) -> str:
        """The DSN as written (``{address}`` in it), password masked."""
        return self.template.display_dsn.replace(ADDRESS_PLACEHOLDER, ADDRESS)

    def address(self, text: str) -> Address:
        """``text`` parsed, with the module's default port; InvalidAddress if it is not a plain address."""
        try:
            return parse_address(text).with_default_port(self.default_port)
        except ValueError as error:
            raise InvalidAddress(f"invalid target for module {self.name!r}: {error}") from None

    def allows(self, address: Address) -> bool:
        """Whether an allow rule matches ``address`` (inventory files are checked apart)."""
        return any(rule.allows(address) for rule in self.allow)

    def target_for(self, address: Address) -> "Target":
        """The target that probes ``address`` with this module's settings (call only once it is allowed)."""
        url = self.template.url.set(host=address.host, port=address.port)
        return replace(self.template, name=f"{self.name}/{address}", url=url)
