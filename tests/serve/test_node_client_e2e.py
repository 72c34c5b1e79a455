"""The official openai Node client, installed from npm, against the real models through Ray Serve:
a ``json_schema`` answer validates (streamed and not), a tool request returns a well-formed call whose
arguments validate (non-streamed, and streamed through the SDK's own delta accumulator), and the
follow-up carrying the tool's result completes (streamed and not), with the assistant message sent back
exactly as the client returned it.

The package is installed once into ``~/.cache/tiergate/npm/openai-<version>`` (``npm install``; the
registry must be reachable the first time). The version is the newest pinned release the installed
Node supports (openai v6 needs Node 20; v4 runs on Debian's Node 18). Without Node or npm the test
fails, saying what to install: it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.serve.conftest import (
    ASK,
    PERSON,
    QWEN,
    WEATHER,
    WEATHER_PARAMS,
    schema_format,
)

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).with_name("node") / "openai_client.mjs"
# Node major -> the openai release tested with it (the newest one that Node supports)
CLIENT_FOR_NODE = {20: "6.49.0", 18: "4.104.0"}
CACHE = Path(os.environ.get("TIERGATE_NPM_CACHE", Path.home() / ".cache" / "tiergate" / "npm"))


def node_major() -> int:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the openai Node client test needs Node.js >= 18 and npm on PATH "
                    "(scripts/bootstrap.sh installs Debian's nodejs and npm when they are missing)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < min(CLIENT_FOR_NODE):
        pytest.fail(f"Node.js {version} is too old for the openai Node client; install Node.js >= 18")
    return major


def install_client(version: str) -> Path:
    """``node_modules`` holding ``openai@version``, installed once and reused."""
    target = CACHE / f"openai-{version}"
    if (target / "node_modules" / "openai" / "package.json").is_file():
        return target / "node_modules"
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".openai-{version}-"))
    (work / "package.json").write_text(json.dumps({"private": True, "dependencies": {"openai": version}}))
    proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-update-notifier"],
                          cwd=work, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.fail(f"npm install openai@{version} failed (is the npm registry reachable?):\n{proc.stderr[-2000:]}")
    try:
        work.rename(target)  # atomic: a concurrent run that got there first keeps its copy
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    return target / "node_modules"


@pytest.fixture(scope="module")
def node_client(tmp_path_factory) -> tuple[Path, str]:
    """A directory with the script and the installed client next to it (ES modules resolve packages
    from the importing file's directory upwards), and the client's version."""
    version = CLIENT_FOR_NODE[max(m for m in CLIENT_FOR_NODE if m <= node_major())]
    modules = install_client(version)
    installed = json.loads((modules / "openai" / "package.json").read_text())["version"]
    assert installed == version
    work = tmp_path_factory.mktemp("node")
    shutil.copy(SCRIPT, work / SCRIPT.name)
    (work / "node_modules").symlink_to(modules, target_is_directory=True)
    return work, version


def run_node(node_client: tuple[Path, str], spec: dict[str, Any]) -> dict[str, Any]:
    work, version = node_client
    (work / "spec.json").write_text(json.dumps({**spec, "client_version": version}))
    proc = subprocess.run(["node", SCRIPT.name, "spec.json"], cwd=work, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, f"node client failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def test_the_openai_node_client_gets_schema_answers_tool_calls_and_follow_ups(fields_app, node_client):
    person = [{"role": "user", "content": "Invent a person."}]
    common = {"temperature": 0, "max_tokens": 64}
    out = run_node(node_client, {
        "base_url": fields_app.api,
        "schema": {"model": "auto", "messages": person, "response_format": schema_format(), **common},
        "schema_stream": {"model": "auto", "messages": person, "response_format": schema_format(), "seed": 3,
                          "temperature": 0.7, "max_tokens": 128},
        "tool": {"model": "auto", "messages": ASK, "tools": [WEATHER], **common},
        "tool_stream": {"model": "auto", "messages": ASK, "tools": [WEATHER], **common,
                        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        "follow_up": {"model": "auto", "tools": [WEATHER], "tool_choice": "none", **common},
        "tool_result": {"temperature_c": 18, "sky": "sunny"},
    })
    assert out["client_version"] == node_client[1]
    # json_schema, not streamed and streamed: the content parses and validates
    assert out["schema"]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(out["schema"]["content"]), PERSON)
    assert out["schema_stream"]["finish_reason"] == "stop" and out["schema_stream"]["chunks"] > 3
    jsonschema.validate(json.loads(out["schema_stream"]["content"]), PERSON)
    # tools: only the Qwen model has them; one well-formed call, as returned and as the SDK assembled it
    for name in ("tool", "tool_stream"):
        got = out[name]
        assert got["model"] == QWEN and got["finish_reason"] == "tool_calls", (name, got)
        (call,) = got["tool_calls"]
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert call["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_PARAMS)
    assert out["tool"]["headers"]["model"] == QWEN
    # the follow-ups with the tool's result complete with text, streamed and not; the text draws on the
    # result (18 C, sunny), which the model can only know from the tool turn
    for name in ("follow", "follow_streamed"):
        got = out[name]
        assert got["model"] == QWEN and got["finish_reason"] in ("stop", "length"), (name, got)
        assert "18" in got["content"] or "sunny" in got["content"].lower(), (name, got["content"])
    assert not out["follow"]["tool_calls"]
