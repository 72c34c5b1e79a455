"""``tiergate label-calls`` on real models in-process: SmolLM2-135M (JSON only) and Qwen2.5-Coder-0.5B
(tools and JSON) answer one tool-call and one extraction prompt of the shipped set; the records,
figures and the profile's class accuracies follow from the scored answers."""

from __future__ import annotations

import json

from serve.cli import main
from serve.evaluation.calls import score_answer
from serve.evaluation.labelled import read_jsonl, read_labelled
from serve.quality_profile import read_profile
from tests.conftest import CPU_POOL, ROOT

SET = ROOT / "deploy" / "eval" / "calls-labelled.jsonl"
PROFILE = ROOT / "deploy" / "profiles" / "cpu-default.json"
SMALL, QWEN = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
IDS = ("tools/timer/0", "extract/book/0")


def test_label_calls_scores_real_answers_and_stores_class_accuracies(tmp_path, capsys):
    subset = tmp_path / "set.jsonl"
    items = {it["id"]: it for it in read_labelled(SET) if it["id"] in IDS}
    subset.write_text("".join(json.dumps(items[i]) + "\n" for i in IDS))
    profile = tmp_path / "profile.json"
    data = json.loads(PROFILE.read_text())
    data.pop("classes", None)
    data["encoder"]["ref"] = str((PROFILE.parent / data["encoder"]["ref"]).resolve())
    profile.write_text(json.dumps(data))
    out, md = tmp_path / "out.jsonl", tmp_path / "figures.md"
    argv = ["label-calls", "--pool", str(CPU_POOL), "--models", f"{SMALL},{QWEN}", "--set", str(subset),
            "--out", str(out), "--markdown", str(md), "--profile", str(profile)]
    assert main(argv) == 0
    tool, extract = read_jsonl(out)
    # SmolLM2 has no tools capability: asked only the extraction
    assert set(tool["outcomes"]) == {QWEN} and set(extract["outcomes"]) == {SMALL, QWEN}
    assert tool["class"] == "tools" and extract["class"] == "json_schema"
    for rec in (tool, extract):
        for model, ans in rec["answers"].items():
            again = score_answer(items[rec["id"]], ans["content"] or "", ans["tool_calls"])
            assert (again.outcome, again.valid) == (rec["outcomes"][model], rec["valid"][model]), (rec["id"], model)
    assert tool["answers"][QWEN]["finish_reason"] == "tool_calls"  # an auto-mode call, read back from the text
    assert all(extract["valid"].values())  # constrained decoding: the object always validates
    table = md.read_text()
    assert f"| {SMALL} | tools | n/a (no tools capability) |" in table
    assert f"| {QWEN} | tools | 1 | {tool['valid'][QWEN]:.3f} | {tool['outcomes'][QWEN]:.3f} |" in table
    stored = read_profile(profile).class_accuracy()
    assert stored == {"tools": {QWEN: tool["outcomes"][QWEN]},
                      "json_schema": {SMALL: extract["outcomes"][SMALL], QWEN: extract["outcomes"][QWEN]}}
    assert "labelling 2 prompts" in capsys.readouterr().err
    # resumes from the partial files: nothing is generated again, the same records come out
    partials = {p.name: p.read_text() for p in tmp_path.glob("out.jsonl.*.partial")}
    assert len(partials) == 2
    assert main(argv) == 0
    assert read_jsonl(out) == [tool, extract]
    assert {p.name: p.read_text() for p in tmp_path.glob("out.jsonl.*.partial")} == partials
    # --rescore: the recorded answers against corrected gold, nothing generated
    for p in tmp_path.glob("out.jsonl.*.partial"):
        p.unlink()
    wrong = {**items[IDS[1]], "answer": {**items[IDS[1]]["answer"], "year": 1066}}
    subset.write_text(json.dumps(items[IDS[0]]) + "\n" + json.dumps(wrong) + "\n")
    assert main([*argv, "--rescore"]) == 0
    tool_again, extract_again = read_jsonl(out)
    assert tool_again == tool and extract_again["answers"] == extract["answers"]
    assert set(extract_again["outcomes"].values()) == {0.0} and all(extract_again["valid"].values())
    assert len(extract_again["why"]) == 2 and all('"year": 1813' in w for w in extract_again["why"].values())
    assert not list(tmp_path.glob("out.jsonl.*.partial"))
