"""The built wheel carries what the defaults need: the default pool, the quality profile it
names and the static encoder, found from the installed package without the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

CHECK = """
import sys
from pathlib import Path
import serve.data, serve.quality_profile as qp
from serve.app import DEFAULT_POOL_DIR
from serve.config import load_pool
from serve.data import DEFAULT_POOL
root = Path(sys.argv[1]).resolve()
assert Path(serve.data.__file__).resolve().is_relative_to(root), serve.data.__file__
pool = load_pool(DEFAULT_POOL)
for path in (DEFAULT_POOL, DEFAULT_POOL_DIR, Path(pool.quality_profile), qp.SHIPPED_ENCODER / "model.safetensors"):
    assert path.exists() and path.resolve().is_relative_to(root), path
print("ok", len(pool.models))
"""


def test_wheel_ships_the_default_pool_profile_and_encoder(tmp_path):
    from tests.conftest import ROOT

    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("router", "serve", "deploy/pools", "deploy/profiles"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("tiergate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"serve/data/pools/cpu-default.yaml", "serve/data/profiles/cpu-default.json",
            "serve/data/profiles/encoders/minilm-l6-m2v-i8-128/model.safetensors"} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # the unpacked wheel first on the path, run from elsewhere: no file of the checkout is used
    out = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")
