"""The tool-call and extraction scorer on the shipped labelled set and on answers of the kinds the
models really give (taken from deploy/eval/calls-outcomes.jsonl runs)."""

from __future__ import annotations

import json

import pytest

from serve.api.schemas import ChatCompletionRequest
from serve.evaluation.calls import (
    CLASS_OF,
    matches,
    normalise,
    request_body,
    score_answer,
)
from serve.evaluation.labelled import read_labelled
from tests.conftest import ROOT

SET = ROOT / "deploy" / "eval" / "calls-labelled.jsonl"
ITEMS = {it["id"]: it for it in read_labelled(SET)}


def call(name, **args):
    return {"name": name, "arguments": json.dumps(args)}


def test_the_set_has_both_classes_and_every_gold_answer_scores_correct():
    kinds = [it["kind"] for it in ITEMS.values()]
    assert 40 <= len(kinds) <= 60 and kinds.count("tool_call") >= 20 and kinds.count("extraction") >= 20
    for item in ITEMS.values():
        gold = item["answer"]
        if item["kind"] == "tool_call":
            assert gold["name"] in {t["function"]["name"] for t in item["tools"]}, item["id"]
            s = score_answer(item, "", [{"name": gold["name"], "arguments": json.dumps(gold["arguments"])}])
        else:
            s = score_answer(item, json.dumps(gold))
        assert s.valid and s.correct, (item["id"], s.why)
        # what a product sends for it is a request the gateway accepts, needing the class's capability
        req = ChatCompletionRequest.model_validate(request_body(item, "auto", 128))
        assert req.requirements() == {CLASS_OF[item["kind"]]}


def test_normalisation():
    assert normalise(" Lisbon. ") == normalise("lisbon") == "lisbon"
    assert normalise("See  you\nat noon.") == "see you at noon"
    assert normalise(3) == normalise(3.0) and normalise(True) != normalise(1) and normalise(False) != normalise(0)
    assert matches({"a": "X", "b": [1, "Y."]}, {"a": "x", "b": [1.0, "y"]})
    assert not matches({"a": "x"}, {"a": "x", "b": 1})  # a missing key
    assert not matches({"a": "x", "b": 1, "c": 2}, {"a": "x", "b": 1})  # an extra key
    assert not matches({"b": ["y", 1]}, {"b": [1, "y"]})  # lists keep their order
    assert matches({"unit": "kg"}, {"unit": "kilograms"}, {"unit": ["kg"]})


def test_tool_calls_valid_correct_and_the_ways_they_fail():
    item = ITEMS["tools/weather/0"]  # get_weather(city=Lisbon, unit=celsius)
    assert score_answer(item, "", [call("get_weather", city="Lisbon", unit="celsius")]).correct
    assert score_answer(item, "", [call("get_weather", city="lisbon.", unit="celsius")]).correct
    wrong = score_answer(item, "", [call("get_weather", city="Lisboa", unit="celsius")])  # 0.5B's real answer
    assert wrong.valid and not wrong.correct and "differ from gold" in wrong.why
    other = score_answer(item, "", [call("get_stock_price", symbol="LIS")])  # an offered tool, the wrong one
    assert other.valid and not other.correct and "expected get_weather" in other.why
    enum = score_answer(item, "", [call("get_weather", city="Lisbon", unit="kelvin")])
    assert not enum.valid and "do not validate" in enum.why
    missing = score_answer(item, "", [call("get_weather", city="Lisbon")])
    assert not missing.valid
    bad_json = score_answer(item, "", [{"name": "get_weather", "arguments": "{city: Lisbon"}])
    assert not bad_json.valid and "not JSON" in bad_json.why
    assert not score_answer(item, "", [call("get_time", city="Lisbon")]).valid  # not offered
    text = score_answer(item, "It is sunny in Lisbon.", [])
    assert not text.valid and "no tool call" in text.why
    two = score_answer(item, "", [call("get_weather", city="Lisbon", unit="celsius")] * 2)
    assert two.valid and not two.correct


def test_extraction_valid_correct_and_the_ways_it_fails():
    item = ITEMS["extract/person/0"]  # Maria Lopez, 34, Valencia
    assert score_answer(item, '{ "name": "Maria Lopez", "age": 34, "city": "Valencia" }').correct
    invented = score_answer(item, '{"name": "Maria Lopez", "age": 34, "city": "Máximarca"}')  # SmolLM2's
    assert invented.valid and not invented.correct
    assert not score_answer(item, '{"name": "Maria Lopez", "age": "34", "city": "Valencia"}').valid
    assert not score_answer(item, '{"name": "Maria Lopez", "age": 34').valid  # cut off by max_tokens
    order = ITEMS["extract/order/0"]  # 3 desk lamps at 24.99; "desk lamps" accepted for the product
    assert score_answer(order, '{"product": "Desk lamps", "quantity": 3, "unit_price": 24.99}').correct
    assert not score_answer(order, '{"product": "desk lamp", "quantity": 3, "unit_price": 24.9}').correct


def test_an_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="tool_call, extraction"):
        score_answer({"kind": "essay"}, "")
