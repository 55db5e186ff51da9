"""The three roles of a Mixture-of-Roles agent and their integer ids.

Every token of a transcript is processed under exactly one role; the role id is what
the adapters of that role key on (see ``moragent.mor``), so the ids are fixed here once.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A role of the agent. Its value is the name used in files, templates and the CLI."""

    REASONER = "reasoner"
    EXECUTOR = "executor"
    SUMMARIZER = "summarizer"

    @property
    def id(self) -> int:
        """The role's integer id: its index in ``ROLES``."""
        return ROLES.index(self)


ROLES: tuple[Role, ...] = (Role.REASONER, Role.EXECUTOR, Role.SUMMARIZER)
ROLE_NAMES: tuple[str, ...] = tuple(role.value for role in ROLES)

#: The roles the reasoner may hand the next turn to.
NEXT_ROLES: tuple[Role, ...] = (Role.EXECUTOR, Role.SUMMARIZER)


def parse_role(name: str | Role) -> Role:
    """Return the role named ``name``, or raise ``ValueError`` listing the legal names."""
    if isinstance(name, Role):
        return name
    try:
        return Role(name.strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown role {name!r}: expected one of {', '.join(ROLE_NAMES)}"
        ) from None
