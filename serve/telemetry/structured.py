"""Did an answer that had to be structured come out right? A brittleness signal per model.

:func:`structured_check` judges one answer against what its request asked for, without any gold:

``json`` (``response_format`` ``json_object`` or ``json_schema``)
    ``valid`` when the content parses as JSON (an object, for ``json_object``) and validates against
    the schema; ``unparsable`` when it does not parse (most often cut off by ``max_tokens``);
    ``schema_invalid`` when it parses but does not validate.
``tool_call`` (a request with tools)
    every call's arguments parse and validate against its function's parameters: ``valid``; one
    does not: ``schema_invalid``; no call came back although one was required (``tool_choice``
    ``required`` or a named function), or the content still holds a ``<tool_call>`` block the reader
    could not take as a call: ``unparsable``. An ``auto`` request answered in plain text is not judged.

Constrained decoding makes ``json`` and forced calls valid unless cut short; ``auto`` calls are free
text read back, so this is where small models break. Counted by model in
``tiergate_structured_outputs_total{model,format,result}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jsonschema

from serve.engines.base import GenerationRequest, ToolCall
from serve.engines.tools import OPEN
from serve.telemetry.brittleness import looks_refused

RESULTS = ("valid", "unparsable", "schema_invalid")


def output_format(gen: GenerationRequest) -> str:
    """``json``, ``tool_call`` or ``""`` (an answer in free text, not judged)."""
    if gen.response_format is not None and gen.response_format.type in ("json_object", "json_schema"):
        return "json"
    if gen.tools is not None:
        return "tool_call"
    return ""


def _validates(data: Any, schema_text: str | None) -> bool:
    if not schema_text:
        return True
    try:
        jsonschema.validate(data, json.loads(schema_text))
    except jsonschema.ValidationError:
        return False
    except (jsonschema.SchemaError, ValueError):  # a schema the engine took but jsonschema cannot read
        return True
    return True


def structured_check(gen: GenerationRequest, text: str, tool_calls: Sequence[ToolCall]) -> str:
    """``valid``, ``unparsable``, ``schema_invalid``, or ``""`` when the answer is not judged."""
    rf, tools = gen.response_format, gen.tools
    if rf is not None and rf.type in ("json_object", "json_schema"):
        try:
            data = json.loads(text)
        except ValueError:
            return "unparsable"
        if rf.type == "json_object":
            return "valid" if isinstance(data, dict) else "schema_invalid"
        return "valid" if _validates(data, rf.schema) else "schema_invalid"
    if tools is not None:
        if not tool_calls:
            return "unparsable" if tools.choice != "auto" or OPEN in text else ""
        params = {s.name: s.parameters for s in tools.specs}
        for call in tool_calls:
            try:
                args = json.loads(call.arguments)
            except ValueError:
                return "unparsable"
            if not _validates(args, params.get(call.name)):
                return "schema_invalid"
        return "valid"
    return ""


def output_checks(gen: GenerationRequest, text: str, tool_calls: Sequence[ToolCall], *,
                  answered: bool) -> dict[str, Any]:
    """The output-health fields of a :class:`~serve.telemetry.records.RequestRecord`: empty (no text
    and no tool call), refused, the format the answer had to have and :func:`structured_check`."""
    return {"empty_output": answered and not text.strip() and not tool_calls,
            "refused": answered and looks_refused(text),
            "output_format": output_format(gen),
            "structured_output": structured_check(gen, text, tool_calls) if answered else ""}
