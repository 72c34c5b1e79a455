"""Files that ship inside the package: the default pools and the quality profiles they name
(with the static encoder the CPU profile embeds prompts with).

In a checkout, ``pools`` and ``profiles`` are links to ``deploy/pools`` and ``deploy/profiles``;
an installed package (wheel, Docker image) carries copies, so the defaults work without the
repository.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent
POOLS_DIR = DATA_DIR / "pools"
PROFILES_DIR = DATA_DIR / "profiles"
DEFAULT_POOL = POOLS_DIR / "cpu-default.yaml"
SHIPPED_ENCODER = PROFILES_DIR / "encoders" / "minilm-l6-m2v-i8-128"
