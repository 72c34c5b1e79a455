"""A streamed answer as server-sent events, in as few writes as the tokens allow.

Every body message costs the ingress a pass through Starlette, Ray Serve's ASGI wrapper and the
HTTP server, and a socket write. Tokens go out one by one, as they come; but everything from the
finishing chunk on (its event, the usage event, ``[DONE]`` and the end of the body) is ready at
once, so it leaves as one message, after the request is settled (as ``[DONE]`` always was).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Send

from router.errors import TiergateError
from serve.api import responses as R
from serve.api.errors import from_exception
from serve.api.schemas import error_body
from serve.engines.base import Chunk
from serve.call import Call

log = logging.getLogger("tiergate.ingress")

Settle = Callable[[BaseException | None], Awaitable[object]]


class Last(bytes):
    """The body's last bytes: :class:`SSEResponse` ends the body with them, in the same message."""


class SSEResponse(StreamingResponse):
    """Starlette's streaming response, but a :class:`Last` chunk also ends the body (one message
    fewer than the empty closing message it would send after it)."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        ended = False
        async for chunk in self.body_iterator:
            ended = isinstance(chunk, Last)
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def sse_events(call: Call, first: Chunk, stream: AsyncIterator[Chunk], settle: Settle) -> AsyncIterator[bytes]:
    """The OpenAI event stream of ``call``: ``first`` and the rest of ``stream``, the usage event when
    asked for, then ``[DONE]``. ``settle(error)`` runs once the answer is complete (or failed, or
    the client left), before ``[DONE]``; a failure mid-stream ends it with an error event."""
    error: BaseException | None = None
    held: list[bytes] = []  # from the finishing chunk on: sent with [DONE], in one message

    def ready(chunk: Chunk, is_first: bool) -> bytes | None:
        """The chunk's event to send now, or None (nothing to send, or held back)."""
        event = R.stream_event(call, chunk, is_first)
        if not event:
            return None
        data = R.sse(event)
        if chunk.finish_reason or held:
            held.append(data)
            return None
        return data

    try:
        if data := ready(first, True):
            yield data
        async for chunk in stream:
            if data := ready(chunk, False):
                yield data
        if call.include_usage:
            held.append(R.sse(R.usage_event(call)))
    except TiergateError as err:
        error = err
        held.append(R.sse(from_exception(err).body))
    except Exception as err:  # noqa: BLE001 - never truncate silently: end with an error event
        error = err
        log.exception("stream failed")
        held.append(R.sse(error_body(f"stream failed: {type(err).__name__}", "server_error", None, "stream_error")))
    except BaseException:  # the client went away: end the run (its outcome), settle, send nothing more
        await stream.aclose()  # type: ignore[attr-defined]
        await settle(None)
        raise
    try:
        await settle(error)
    except Exception:
        if held:  # what was ready still goes out; the stream ends without [DONE]
            yield b"".join(held)
        raise
    yield Last(b"".join([*held, R.sse("[DONE]")]))

