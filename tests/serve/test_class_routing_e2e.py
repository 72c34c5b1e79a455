"""Tool requests routed on the tools class through Ray Serve: the embedded ladder with the shipped
profile, whose class accuracies were measured by ``tiergate label-calls`` on the labelled tool-call
set. A floor between the two tool-capable models' accuracies goes to the cheapest model above it; a
floor both meet stays on the cheaper; the headers say which class's measured accuracy was used."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from serve.config import load_pool
from serve.quality_profile import read_profile
from tests.conftest import CPU_POOL
from tests.serve.conftest import ASK, WEATHER, WEATHER_PARAMS

pytestmark = pytest.mark.e2e
POOL = load_pool(CPU_POOL)
TOOLS = read_profile(POOL.quality_profile).class_accuracy().get("tools", {})
# the tool-capable models, cheapest first
LADDER = sorted((m for m in POOL.models if "tools" in m.capabilities), key=lambda m: m.price.output_per_mtok)


@pytest.fixture(scope="module")
def client(gateway):
    with openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def cheapest_meeting(floor: float) -> str:
    return next(m.name for m in LADDER if TOOLS[m.name] >= floor)


def test_the_shipped_profile_measures_every_tool_capable_model():
    assert len(LADDER) == 2 and {m.name for m in LADDER} <= set(TOOLS)
    cheap, dear = (TOOLS[m.name] for m in LADDER)
    assert cheap != dear  # otherwise no floor lies between them


@pytest.mark.parametrize("where", ["between", "below both"])
def test_a_tool_request_goes_to_the_cheapest_model_meeting_the_floor_on_the_tools_class(client, where):
    accs = sorted(TOOLS[m.name] for m in LADDER)
    floor = round((accs[0] + accs[1]) / 2, 4) if where == "between" else round(accs[0] / 2, 4)
    expected = cheapest_meeting(floor)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=48,
        extra_body={"routing": {"min_quality": floor}})
    h, r = raw.headers, raw.parse()
    assert h["x-tiergate-model"] == expected == r.model
    assert h["x-tiergate-route-reason"] == "cheapest_feasible"
    assert h["x-tiergate-quality-class"] == "tools"
    assert h["x-tiergate-predicted-quality"] == f"{TOOLS[expected]:.4f}"
    info = r.model_extra["tiergate"]
    assert "supporting tools" in info["explanation"] and "measured accuracy on tools requests" in info["explanation"]
    assert {c["model"]: c["predicted_quality"] for c in info["candidates"]} == {
        m.name: round(TOOLS[m.name], 4) for m in LADDER}
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMS)


def test_a_plain_request_is_not_in_the_tools_class(client):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=ASK, temperature=0, max_tokens=4)
    assert "x-tiergate-quality-class" not in raw.headers
    assert "measured accuracy" not in raw.parse().model_extra["tiergate"]["explanation"]
