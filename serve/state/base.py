"""The state that every ingress replica must agree on, behind one small abstract class.

Three kinds of shared counter, each one atomic operation in every store:

* **rate windows** (a key's requests or tokens per minute or day): sliding-window counters
  from the ``limits`` library, constant cost per request whatever the count. ``hit`` charges
  several windows all or none; ``refund`` gives back what a request reserved and did not use.
* **leases** (a model's requests in flight): one entry per request, each with an expiry, so a
  replica that dies holding some cannot leak them past ``ttl_s``; ``lease`` admits while fewer
  than ``capacity`` are held.
* **reservations** (money: a key's spend in a budget period): an integer counter that only
  grows past ``limit`` by ``adjust`` (settling a request's true cost), never by ``reserve``.

Stores: ``memory`` (one ingress replica), ``ray`` (a named Ray actor that all replicas share:
the default with several) and ``redis`` (``limits``' async Redis storage, plus two Lua scripts).
A store that cannot be reached raises :class:`StoreUnavailableError`; the caller fails open or
closed by configuration.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from router.errors import StoreUnavailableError

__all__ = ["Charge", "Refusal", "StateStore", "StoreUnavailableError", "Window"]


@dataclass(frozen=True)
class Window:
    """One rate window: at most ``limit`` units per ``period_s`` for the holder ``name``."""

    name: str  # e.g. "requests-per-minute:alice"
    limit: int
    period_s: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_s < 1:
            raise ValueError(f"window {self.name!r} needs limit >= 1 and period_s >= 1")


@dataclass(frozen=True)
class Charge:
    window: Window
    amount: int


@dataclass(frozen=True)
class Refusal:
    """Why ``hit`` admitted nothing: the first window without room, and when to try again."""

    window: Window
    retry_after_s: float


class StateStore(abc.ABC):
    """Shared counters. Every method is one atomic step on the store's side."""

    name: str = "abstract"

    # ------------------------------------------------------------------ rate windows
    @abc.abstractmethod
    async def hit(self, charges: Sequence[Charge]) -> Refusal | None:
        """Charge every window its amount if each has room, else charge none and say which refused."""

    @abc.abstractmethod
    async def refund(self, charges: Sequence[Charge]) -> None:
        """Give back amounts charged earlier (a request's reserved tokens that it did not use)."""

    # ------------------------------------------------------------------ leases
    @abc.abstractmethod
    async def lease(self, pool: str, holder: str, capacity: int, ttl_s: float) -> int | None:
        """Hold one of ``pool``'s slots for ``holder``: the number held after, or None when full."""

    @abc.abstractmethod
    async def unlease(self, pool: str, holder: str) -> None:
        """Free ``holder``'s slot (nothing happens when it has none)."""

    @abc.abstractmethod
    async def held(self, pools: Sequence[str]) -> dict[str, int]:
        """How many live leases each pool holds."""

    # ------------------------------------------------------------------ reservations
    @abc.abstractmethod
    async def reserve(self, counter: str, amount: int, limit: int, ttl_s: int) -> int | None:
        """Add ``amount`` if the counter stays at or below ``limit``: the value after, or None."""

    @abc.abstractmethod
    async def adjust(self, counter: str, delta: int, ttl_s: int) -> int:
        """Add ``delta`` (negative gives back) whatever the limit: the value after."""

    @abc.abstractmethod
    async def values(self, counters: Sequence[str]) -> dict[str, int]:
        """The counters' values (0 for one never written or expired)."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:  # noqa: B027 - optional
        """Connect, or start the store's process, before the first request needs it."""

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:  # noqa: B027 - optional
        pass

