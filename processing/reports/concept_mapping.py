"""Mapping the concept names an LLM writes onto the concepts of the vocabulary.

An LLM names findings in its own words ("AF with RVR", "first degree heart block"); the entities file
stores vocabulary names. :class:`ConceptMapper` bridges the two: exact synonym, then the lexicon on
the phrase, then text-embedding similarity.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..concepts.vocabulary import ConceptVocabulary, load_concept_vocabulary
from ..text_encoder import DEFAULT_TEXT_ENCODER, resolve_text_encoder_path
from .lexicon import LexiconExtractor

DEFAULT_SIMILARITY_THRESHOLD = 0.80


class ConceptMapper:
    """Map free-text concept names from an LLM onto vocabulary concepts.

    Order: (1) :meth:`ConceptVocabulary.lookup` (normalised exact name or synonym); (2) the lexicon
    extractor run on the phrase: the concepts it finds there (a phrase such as "sinus rhythm with
    first degree AV block" names two); (3) cosine similarity of mean-pooled text-encoder embeddings
    (all-MiniLM-L6-v2 by default) between the phrase and every concept name and synonym of four or
    more characters, accepted at or above ``threshold``. Anything else is unmapped.

    The default threshold 0.80 was set on paraphrases that steps 1-2 miss: at 0.80 "atrial fibrilation
    with rapid ventricular rate" (0.89) and "digoxin toxicity" (0.83) still map, while unrelated
    findings such as "heart murmur" (0.68), "borderline ECG" before it had its own concept (0.74) or
    "electrode misplacement" (0.52) do not. ``use_encoder=False`` skips step 3.

    The embeddings of the vocabulary texts are computed once per process and, when ``cache_dir`` is
    given (default ``$SUPREME_CACHE`` or ``~/.cache/supreme_ecg``; ``cache_dir=False`` disables it),
    stored there keyed by the texts and the encoder.
    """

    def __init__(self, vocabulary: Optional[ConceptVocabulary] = None, threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
                 use_encoder: bool = True, encoder_path: Optional[str] = None, device: str = "cpu",
                 cache_dir: Any = None):
        self.vocabulary = vocabulary if vocabulary is not None else load_concept_vocabulary()
        self.threshold = float(threshold)
        self.use_encoder = use_encoder
        self.encoder_path = encoder_path
        self.device = device
        if cache_dir is None:
            cache_dir = os.environ.get("SUPREME_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "supreme_ecg")
        self.cache_dir = cache_dir or None
        self._lexicon = LexiconExtractor(self.vocabulary)
        self._cache: Dict[str, Tuple[Tuple[str, ...], str, float]] = {}
        self._lock = threading.Lock()
        self._encoder = None  # (tokenizer, model, matrix, owners) once loaded

    def map(self, text: str) -> Tuple[Tuple[str, ...], str, float]:
        """``(concept_names, method, score)``; method is synonym/lexicon/embedding/unmapped (names empty)."""
        key = text.strip().lower()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = self._map_uncached(text)
        with self._lock:
            self._cache[key] = result
        return result

    def _map_uncached(self, text: str) -> Tuple[Tuple[str, ...], str, float]:
        concept = self.vocabulary.lookup(text)
        if concept is not None:
            return (concept.name,), "synonym", 1.0
        found = tuple(dict.fromkeys(e["concept"] for e in self._lexicon.extract(text)))
        if found:
            return found, "lexicon", 1.0
        if not self.use_encoder:
            return (), "unmapped", 0.0
        name, score = self._nearest(text)
        if score >= self.threshold:
            return (name,), "embedding", score
        return (), "unmapped", score

    def _load_encoder(self):
        import hashlib

        import torch
        from transformers import AutoModel, AutoTokenizer

        path = self.encoder_path or resolve_text_encoder_path(DEFAULT_TEXT_ENCODER)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).to(self.device).eval()
        texts, owners = [], []
        for concept in self.vocabulary:
            for text in concept.texts:
                if len(text) >= 4:  # bare abbreviations embed poorly and are found by step 1 anyway
                    texts.append(text)
                    owners.append(concept.name)
        cache_file = None
        if self.cache_dir:
            weights = os.path.join(path, "model.safetensors")
            stamp = f"{os.path.getsize(weights)}:{os.path.getmtime(weights)}" if os.path.isfile(weights) else path
            digest = hashlib.sha256(json.dumps([os.path.abspath(path), stamp, texts]).encode("utf-8")).hexdigest()[:24]
            cache_file = os.path.join(str(self.cache_dir), f"concept_embeddings_{digest}.pt")
            if os.path.isfile(cache_file):
                try:
                    matrix = torch.load(cache_file, map_location=self.device, weights_only=True)
                    if matrix.shape[0] == len(texts):
                        return tokenizer, model, matrix, owners
                except Exception:  # a damaged cache file is recomputed
                    pass
        matrix = self._embed(tokenizer, model, texts)
        if cache_file:
            try:
                os.makedirs(os.path.dirname(cache_file), exist_ok=True)
                partial = f"{cache_file}.{os.getpid()}.tmp"
                torch.save(matrix.cpu(), partial)
                os.replace(partial, cache_file)
            except OSError:
                pass  # a read-only home only costs the recomputation next time
        return tokenizer, model, matrix, owners

    def _embed(self, tokenizer, model, texts: Sequence[str]):
        import torch

        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), 256):
                batch = tokenizer(list(texts[start:start + 256]), padding=True, truncation=True, max_length=32,
                                  return_tensors="pt").to(self.device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks)

    def _nearest(self, text: str) -> Tuple[Optional[str], float]:
        with self._lock:
            if self._encoder is None:
                self._encoder = self._load_encoder()
            tokenizer, model, matrix, owners = self._encoder
            query = self._embed(tokenizer, model, [text])
        scores = (matrix @ query[0]).tolist()
        best = max(range(len(scores)), key=scores.__getitem__)
        return owners[best], float(scores[best])

    def map_entities(self, entities: List[Dict[str, str]]) -> Tuple[List[Dict[str, str]], List[Dict[str, str]]]:
        """Split parsed LLM entities into (mapped entities, unmapped entities); mapped ones carry vocabulary names."""
        mapped, unmapped = [], []
        seen = set()
        for entity in entities:
            names, _, _ = self.map(entity["concept"])
            if not names:
                unmapped.append(dict(entity))
                continue
            for name in names:
                key = (entity["span"], name, entity["status"])
                if key not in seen:
                    seen.add(key)
                    mapped.append({"span": entity["span"], "concept": name, "status": entity["status"]})
        return mapped, unmapped


__all__ = ["ConceptMapper", "DEFAULT_SIMILARITY_THRESHOLD"]
