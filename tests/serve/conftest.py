"""Fixtures shared by the request-field tests: the official Python openai client
(``test_request_fields_e2e.py``) and the official Node client (``test_node_client_e2e.py``) ask
the same app the same things."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.conftest import CPU_POOL, Gateway, ServeCluster

BASE: dict[str, Any] = yaml.safe_load(CPU_POOL.read_text())
SMALL, QWEN = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
MODELS: dict[str, dict[str, Any]] = {m["name"]: m for m in BASE["models"]}

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}}}
WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
                  "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                            "parameters": WEATHER_PARAMS}}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


def schema_format(schema: dict[str, Any] = PERSON) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


@pytest.fixture(scope="session")
def fields_app(serve_cluster: ServeCluster) -> Gateway:
    """SmolLM2-135M (declared able to do constrained JSON) and Qwen2.5-Coder-0.5B (tools and JSON), from
    the CPU pool, without quality profile; deployed once for every test module that asks."""
    if QWEN not in MODELS:
        pytest.skip(f"the CPU pool has no {QWEN}")
    models = [{**MODELS[SMALL], "capabilities": ["json_schema"]},
              {**MODELS[QWEN], "capabilities": ["tools", "json_schema"]}]
    cfg = {"name": "fields", "models": models, "auth": {"enabled": False},
           "limits": {**BASE["limits"], "max_tokens_limit": 256}}
    return serve_cluster.deploy("fields", {"pool_config": cfg}, "/fields", timeout=600)
