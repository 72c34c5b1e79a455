"""Per-key request and token quotas (per minute and per day), in the shared state store.

At admission one atomic ``hit`` charges the key's request windows one request and its token
windows the request's estimated size (prompt estimate plus ``max_tokens``), all or none; when
the request ends, :meth:`Quotas.settle` gives back what it reserved and did not use (or, rarely,
charges what it used beyond the estimate). So concurrent requests, through any number of
ingress replicas, cannot together pass a token quota by more than one request's estimation
error, and a request quota is exact. Windows are sliding-window counters (constant cost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from router.errors import RateLimitError
from serve.auth import ApiKey
from serve.state import Charge, StateStore, StoreUnavailableError, Window

log = logging.getLogger("tiergate.quotas")

PERIODS = {"minute": 60, "day": 86_400}


def reservation(prompt_text: str, messages: int, max_tokens: int) -> int:
    """The tokens a request reserves at admission: a deliberate overestimate (half the prompt's
    UTF-8 bytes, where a typical token is about four, plus a chat template's per-message and
    system-prompt tokens), so that concurrent requests cannot pass a quota on estimates that are
    too low; what is not used is given back when the request ends. A window smaller than this
    is reserved whole (the request then runs alone in it)."""
    return len(prompt_text.encode("utf-8")) // 2 + 16 * max(1, messages) + 64 + max_tokens


def least_tokens(prompt_text: str, max_tokens: int) -> int:
    """A typical size (four bytes a token): a request larger than a whole window is refused outright."""
    return (len(prompt_text.encode("utf-8")) + 3) // 4 + max_tokens


@dataclass(frozen=True)
class Ticket:
    """What admission charged a key's token windows, to settle when the request ends."""

    tokens: tuple[Charge, ...]


NO_TICKET = Ticket(())


class Quotas:
    def __init__(self, store: StateStore, *, fail_open: bool = False) -> None:
        self.store = store
        self.fail_open = fail_open
        self.errors = 0

    @staticmethod
    def windows(key: ApiKey, kind: str) -> list[Window]:
        out = []
        for period, seconds in PERIODS.items():
            amount = getattr(key.limits, f"{kind}_per_{period}")
            if amount is not None:
                out.append(Window(f"{kind}-per-{period}:{key.name}", amount, seconds))
        return out

    async def admit(self, key: ApiKey, prompt_text: str, messages: int, max_tokens: int) -> Ticket:
        """Charge the key, or raise RateLimitError (429 with Retry-After) when it is over a quota."""
        size, reserve = least_tokens(prompt_text, max_tokens), reservation(prompt_text, messages, max_tokens)
        tokens = [Charge(w, min(reserve, w.limit)) for w in self.windows(key, "tokens")]
        for c in tokens:
            if size > c.window.limit:
                raise RateLimitError(f"this request (~{size} tokens) exceeds key {key.name!r}'s quota "
                                     f"of {c.window.limit} {_label(c.window)}", retry_after_s=60.0,
                                     code="quota_exceeded")
        charges = [Charge(w, 1) for w in self.windows(key, "requests")] + tokens
        if not charges:
            return NO_TICKET
        try:
            refusal = await self.store.hit(charges)
        except StoreUnavailableError as err:
            self.errors += 1
            if not self.fail_open:
                raise
            log.warning("state store unavailable: key %r admitted without its quota check: %s", key.name, err)
            return NO_TICKET
        if refusal is not None:
            raise RateLimitError(f"key {key.name!r} is over its quota of {refusal.window.limit} "
                                 f"{_label(refusal.window)}", retry_after_s=refusal.retry_after_s,
                                 code="quota_exceeded")
        return Ticket(tuple(tokens))

    async def settle(self, ticket: Ticket, used_tokens: int) -> None:
        """Give back the reserved tokens the request did not use; charge any it used beyond them."""
        if not ticket.tokens:
            return
        try:
            refunds = [Charge(c.window, c.amount - used_tokens) for c in ticket.tokens if c.amount > used_tokens]
            if refunds:
                await self.store.refund(refunds)
            for c in ticket.tokens:  # best effort: a window already full keeps its count (one request's error)
                if used_tokens > c.amount:
                    await self.store.hit([Charge(c.window, used_tokens - c.amount)])
        except StoreUnavailableError:
            self.errors += 1
            raise


def _label(w: Window) -> str:
    kind, _, period = w.name.partition(":")[0].partition("-per-")
    return f"{kind} per {period}"
