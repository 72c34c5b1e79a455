"""Constrained decoding: what a request's output must follow, for each engine.

``response_format`` ``json_object`` and ``json_schema``, and a forced tool call (``tool_choice``
``required`` or a named function), become a GBNF grammar for llama.cpp (through llama-cpp-python's
JSON-Schema converter) and ``StructuredOutputsParams`` arguments for vLLM. The sampler then only
ever picks tokens the constraint allows, so the answer parses (and validates) unless
``max_tokens`` cuts it short.
"""

from __future__ import annotations

import json
from typing import Any

from router.errors import InvalidRequestError
from serve.engines.base import GenerationRequest
from serve.engines.tools import CLOSE, OPEN, call_schema

ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _literal(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid GBNF literal for this text


def _no_control_chars(rules: str) -> str:
    """JSON strings may not hold raw control characters; this converter's ``char`` rule allows them."""
    return rules.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')


def schema_grammar(schema: dict[str, Any], *, prefix: str = "", suffix: str = "") -> str:
    """GBNF for JSON that validates against ``schema``, optionally between two literal strings."""
    from llama_cpp.llama_grammar import SchemaConverter

    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = conv.resolve_refs(schema, "request")
        conv.visit(resolved, "value-root")
        rules = _no_control_chars(conv.format_grammar())
    except Exception as err:  # noqa: BLE001 - the converter raises plain errors on schemas it cannot express
        raise InvalidRequestError(f"JSON schema not supported for constrained decoding: {err}",
                                  param="response_format", code="invalid_schema") from None
    parts = [p for p in (_literal(prefix) if prefix else "", "value-root", _literal(suffix) if suffix else "") if p]
    return f"root ::= {' '.join(parts)}\n{rules}"


def request_grammar(request: GenerationRequest) -> str | None:
    """The grammar a request's output must follow, or None when it is free text."""
    tools = request.tools
    if tools is not None and tools.choice in ("required", "function"):
        return schema_grammar(call_schema(tools), prefix=OPEN + "\n", suffix="\n" + CLOSE)
    rf = request.response_format
    if rf is None or rf.type == "text":
        return None
    schema = ANY_OBJECT if rf.type == "json_object" else json.loads(rf.schema or "{}")
    return schema_grammar(schema)


def structured_outputs(request: GenerationRequest) -> dict[str, Any] | None:
    """vLLM's ``StructuredOutputsParams`` arguments for the request, or None for free text.

    A forced tool call (``required`` or a named function) is constrained to the call object's JSON;
    the tool-call reader takes such a bare call as the call.
    """
    tools = request.tools
    if tools is not None and tools.choice in ("required", "function"):
        return {"json": call_schema(tools)}
    rf = request.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return {"json_object": True}
    return {"json": json.loads(rf.schema or "{}")}
