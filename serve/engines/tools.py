"""Tool calls in the Hermes/Qwen2.5 format: rendering a conversation for the chat template, and
reading calls back out of the generated text, streamed.

Qwen2.5's chat template (like Hermes-style templates) lists the tools in the system turn and asks
for each call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``; tool results come
back as ``tool`` turns that the template wraps in ``<tool_response>``. A model whose template has
no such format cannot take tools (:func:`template_has_tool_format`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from typing import Any

from serve.engines.base import Chunk, Message, ToolCall, Tools

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def template_has_tool_format(template: str | None) -> bool:
    """Whether a chat template speaks the ``<tool_call>`` format (and so can be given tools)."""
    return bool(template) and OPEN in template and "tools" in template


def _arguments(text: str) -> Any:
    """OpenAI sends arguments as JSON text; chat templates expect the object."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def template_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages as chat templates (Hugging Face convention) take them."""
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name:
            d["name"] = m.name
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                               for c in m.tool_calls]
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def template_tools(tools: Tools | None) -> list[dict[str, Any]] | None:
    """The request's tools in OpenAI's shape, for the chat template's ``tools`` variable."""
    if tools is None:
        return None
    specs = [s for s in tools.specs if tools.choice != "function" or s.name == tools.function]
    return [{"type": "function", "function": {
        "name": s.name, **({"description": s.description} if s.description else {}),
        "parameters": json.loads(s.parameters)}} for s in specs]


def call_schema(tools: Tools) -> dict[str, Any]:
    """JSON Schema of one call object ``{"name", "arguments"}`` the request allows."""
    specs = [s for s in tools.specs if tools.choice != "function" or s.name == tools.function]
    options = [{"type": "object", "properties": {"name": {"const": s.name},
                                                  "arguments": json.loads(s.parameters)},
                "required": ["name", "arguments"], "additionalProperties": False} for s in specs]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _hold(buf: str, marker: str) -> int:
    """How many trailing characters of ``buf`` could be the start of ``marker``."""
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0


class ToolCallParser:
    """Splits generated text into content and ``<tool_call>`` blocks, as it streams.

    Text that may be the start of a tag is held back until it is known; a block that does not
    parse as a call to one of the request's functions stays in the content, unchanged. Small
    models (Qwen2.5-Coder-0.5B) often answer with the call's JSON alone, without the tags: an
    answer that starts with ``{`` (or a fenced code block, as Qwen2.5-Coder-1.5B writes them) is
    held to the end and read as calls if it is nothing else.
    """

    def __init__(self, tools: Tools) -> None:
        self.names = {s.name for s in tools.specs}
        self.parallel = tools.parallel
        self.calls = 0
        self._buf = ""
        self._inside = False
        self._lead: bool | None = None  # None: nothing but whitespace yet; True: a bare-JSON answer

    def feed(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        self._buf += text
        if self._lead is None and self._buf.strip():
            self._lead = self._buf.lstrip().startswith(("{", "`"))
        if self._lead is not False:
            return "", ()
        return self._scan()

    def _scan(self) -> tuple[str, tuple[ToolCall, ...]]:
        content: list[str] = []
        calls: list[ToolCall] = []
        while True:
            if not self._inside:
                i = self._buf.find(OPEN)
                if i < 0:
                    keep = _hold(self._buf, OPEN)
                    content.append(self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep:]
                    break
                content.append(self._buf[:i])
                self._buf, self._inside = self._buf[i + len(OPEN):], True
            else:
                j = self._buf.find(CLOSE)
                if j < 0:
                    break
                body, self._buf, self._inside = self._buf[:j], self._buf[j + len(CLOSE):], False
                self._take(body, content, calls, closed=True)
        return "".join(content), tuple(calls)

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """The rest at the end of generation; an unclosed block counts if its JSON is complete."""
        if self._lead is not False:
            bare = self._bare(self._buf)
            if bare:
                self._buf = ""
                return "", bare
            self._lead = False
        text, found = self._scan()
        content: list[str] = [text]
        calls: list[ToolCall] = list(found)
        if self._inside:
            self._take(self._buf, content, calls, closed=False)
        else:
            content.append(self._buf)
        self._buf, self._inside = "", False
        return "".join(content), tuple(calls)

    def _bare(self, text: str) -> tuple[ToolCall, ...]:
        """Calls when ``text`` is nothing but call objects (whitespace between), else ()."""
        fenced = re.fullmatch(r"\s*```(?:json)?\s*\n(.*?)```\s*", text, flags=re.DOTALL)
        if fenced:
            text = fenced.group(1)
        decoder, pos, calls = json.JSONDecoder(), 0, []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except ValueError:
                return ()
            call = self._call(obj, len(calls))
            if call is None or (calls and not self.parallel):
                return ()
            calls.append(call)
        self.calls = len(calls)
        return tuple(calls)

    def _take(self, body: str, content: list[str], calls: list[ToolCall], *, closed: bool) -> None:
        call = self._parse(body)
        if call is None or (self.calls and not self.parallel):
            content.append(OPEN + body + (CLOSE if closed else ""))
            return
        calls.append(call)
        self.calls += 1

    def _parse(self, body: str) -> ToolCall | None:
        try:
            obj = json.loads(body)
        except ValueError:
            return None
        return self._call(obj, self.calls)

    def _call(self, obj: Any, index: int) -> ToolCall | None:
        if not isinstance(obj, dict) or obj.get("name") not in self.names:
            return None
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=obj["name"],
                        arguments=json.dumps(args, ensure_ascii=False), index=index)


class ToolChunks:
    """Rewrites an engine's chunk stream: tool-call text becomes ``Chunk.tool_calls``.

    With at least one call, a generation that stopped naturally finishes with ``tool_calls``.
    """

    def __init__(self, tools: Tools) -> None:
        self.parser = ToolCallParser(tools)

    def chunk(self, chunk: Chunk) -> Chunk:
        text, calls = self.parser.feed(chunk.text)
        finish = chunk.finish_reason
        if finish is not None:
            rest, more = self.parser.finish()
            text, calls = text + rest, calls + more
            if self.parser.calls and finish == "stop":
                finish = "tool_calls"
        return replace(chunk, text=text, tool_calls=calls, finish_reason=finish)
