"""Scorer of tool-call and extraction answers against gold (``deploy/eval/calls-labelled.jsonl``).

An item of kind ``tool_call`` carries ``tools`` and ``answer: {"name", "arguments"}``; one of kind
``extraction`` carries a ``json_schema`` ``response_format`` and ``answer``: the gold object. An
answer is what came back: the message ``content`` and its ``tool_calls`` (``[{"name", "arguments"}]``,
arguments as JSON text, as OpenAI sends them).

``valid``
    tool_call: at least one call, and every call names one of the offered tools with arguments that
    parse and validate against that tool's parameter schema. extraction: the content parses as JSON
    and validates against the schema.
``correct``
    valid, and the answer equals gold after normalisation: for tool_call exactly one call, to the gold
    function, with the gold arguments. Normalisation: strings are case-folded, whitespace collapsed,
    one trailing ``.`` dropped; numbers compare by value (``3`` equals ``3.0``; booleans are not
    numbers); objects need the same keys; lists compare in order. An item's ``accept`` names
    alternative values per top-level key (``{"unit": ["kg"]}``).

Hand-written; jsonschema does the validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

KINDS = ("tool_call", "extraction")
# the quality class (and the capability) each kind measures
CLASS_OF = {"tool_call": "tools", "extraction": "json_schema"}


@dataclass(frozen=True)
class CallScore:
    valid: bool
    correct: bool
    why: str = ""  # what was wrong, empty when correct

    @property
    def outcome(self) -> float:
        return 1.0 if self.correct else 0.0


def normalise(value: Any) -> Any:
    """A comparable form of a JSON value (see the module docstring)."""
    if isinstance(value, bool):
        return ("bool", value)  # True == 1.0 in Python; in JSON they differ
    if value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = " ".join(value.split()).casefold()
        return text.removesuffix(".")
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [normalise(v) for v in value]
    return value


def matches(got: Any, gold: Any, accept: Mapping[str, Sequence[Any]] | None = None) -> bool:
    """``got`` equals ``gold`` after normalisation; a top-level key may take an ``accept``-ed value."""
    if not isinstance(got, Mapping) or not isinstance(gold, Mapping):
        return normalise(got) == normalise(gold)
    if set(got) != set(gold):
        return False
    for key, want in gold.items():
        options = [want, *(accept or {}).get(key, ())]
        if not any(normalise(got[key]) == normalise(o) for o in options):
            return False
    return True


def _invalid(data: Any, schema: Mapping[str, Any]) -> str:
    """Why ``data`` does not validate against ``schema``; empty when it does."""
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as err:
        return err.message[:160]
    return ""


def _parameters(item: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in item["tools"]}


def score_tool_call(item: Mapping[str, Any], content: str, tool_calls: Sequence[Mapping[str, Any]]) -> CallScore:
    if not tool_calls:
        return CallScore(False, False, f"no tool call; content: {content[:80]!r}")
    params = _parameters(item)
    parsed = []
    for call in tool_calls:
        name = call.get("name")
        if name not in params:
            return CallScore(False, False, f"call to {name!r}, not an offered tool")
        try:
            args = json.loads(call.get("arguments") or "")
        except ValueError:
            return CallScore(False, False, f"arguments of {name} are not JSON")
        bad = _invalid(args, params[name])
        if bad:
            return CallScore(False, False, f"arguments of {name} do not validate: {bad}")
        parsed.append((name, args))
    gold = item["answer"]
    if len(parsed) != 1:
        return CallScore(True, False, f"{len(parsed)} calls, expected one")
    name, args = parsed[0]
    if name != gold["name"]:
        return CallScore(True, False, f"called {name}, expected {gold['name']}")
    if not matches(args, gold["arguments"], item.get("accept")):
        return CallScore(True, False, f"arguments {json.dumps(args)[:120]} differ from gold")
    return CallScore(True, True)


def score_extraction(item: Mapping[str, Any], content: str) -> CallScore:
    schema = item["response_format"]["json_schema"]["schema"]
    try:
        data = json.loads(content)
    except ValueError:
        return CallScore(False, False, f"content is not JSON: {content[:80]!r}")
    bad = _invalid(data, schema)
    if bad:
        return CallScore(False, False, f"does not validate: {bad}")
    if not matches(data, item["answer"], item.get("accept")):
        return CallScore(True, False, f"object {json.dumps(data)[:120]} differs from gold")
    return CallScore(True, True)


def score_answer(item: Mapping[str, Any], content: str, tool_calls: Sequence[Mapping[str, Any]] = ()) -> CallScore:
    """Score one answer to a labelled tool-call or extraction item."""
    if item["kind"] == "tool_call":
        return score_tool_call(item, content, tool_calls)
    if item["kind"] == "extraction":
        return score_extraction(item, content)
    raise ValueError(f"unknown item kind {item['kind']!r}; valid kinds: {', '.join(KINDS)}")


def request_body(item: Mapping[str, Any], model: str, max_tokens: int) -> dict[str, Any]:
    """The chat-completions body a product sends for this item: one user message plus the item's
    ``tools`` / ``tool_choice`` or ``response_format``; greedy."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": item["prompt"]}],
                            "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
    for key in ("tools", "tool_choice", "response_format"):
        if key in item:
            body[key] = item[key]
    return body
