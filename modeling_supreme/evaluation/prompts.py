"""The prompt bank: the zero-shot query texts of each class.

Our design (the paper's prompts are not available to us).

A class that is a concept of the vocabulary gets two prompts, in this order:

1. its one-sentence `description`: the text the design uses as the concept's training query, so a
   model sees it in the form it was trained on;
2. its canonical `name` ("atrial fibrillation", "normal ECG"): the short wording a clinician would
   type, which tests whether the model's text side generalises beyond the exact training query.

The model's logits for a class's prompts are averaged before the sigmoid (averaging logits, not
probabilities, keeps the result an ordinary logit whose sigmoid is a score in (0, 1)). A prompt
file (`{"class": "text" | ["text", ...]}`) replaces the bank: then every class must be in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

from .errors import EvaluationError


def concept_prompts(concept) -> List[str]:
    """The bank's prompts for one vocabulary concept: its description, then its name (duplicates dropped)."""
    prompts: List[str] = []
    for text in (concept.description, concept.name):
        text = (text or "").strip()
        if text and text.casefold() not in {p.casefold() for p in prompts}:
            prompts.append(text)
    return prompts


def load_prompt_file(path) -> Dict[str, List[str]]:
    """Read a prompt file: a JSON object mapping class names to a prompt or a list of prompts."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"prompt file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvaluationError(f"prompt file {path}: not valid UTF-8 JSON ({error})") from None
    if not isinstance(data, dict) or not data:
        raise EvaluationError(
            f'prompt file {path}: expected a non-empty JSON object {{"class name": "prompt" or ["prompt", ...]}}, '
            f"got {type(data).__name__}"
        )
    prompts: Dict[str, List[str]] = {}
    for name, value in data.items():
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise EvaluationError(
                f"prompt file {path}: class {name!r} must map to a non-empty string or a non-empty list of "
                f"non-empty strings, got {value!r}"
            )
        unique: List[str] = []
        for text in texts:
            if text.strip() not in unique:
                unique.append(text.strip())
        prompts[str(name)] = unique
    return prompts


def class_prompts(class_names: Sequence[str], vocab=None, prompt_file=None) -> Dict[str, List[str]]:
    """Zero-shot prompts for each class, in class order.

    Args:
        class_names: the classes to score (concept names of the vocabulary for the bank).
        vocab: a `ConceptVocabulary` (default: the one shipped in `processing/concepts/`). A class is found by
            its exact concept name, else by `vocab.lookup` (name or synonym after normalisation).
        prompt_file: a JSON file `{class: str | [str, ...]}` that replaces the bank; it must name
            every class (extra entries are ignored).

    Returns:
        `{class_name: [prompt, ...]}`, every list non-empty.

    Raises:
        EvaluationError: no classes, duplicate classes, a bad prompt file, or classes without prompts
            (all of them listed).
    """
    class_names = list(class_names)
    if not class_names:
        raise EvaluationError("no classes to evaluate")
    duplicates = sorted({c for c in class_names if class_names.count(c) > 1})
    if duplicates:
        raise EvaluationError(f"duplicate class names: {duplicates}")

    if prompt_file is not None:
        from_file = load_prompt_file(prompt_file)
        missing = [c for c in class_names if c not in from_file]
        if missing:
            unused = sorted(set(from_file) - set(class_names))
            hint = f"; entries in the file that match no class: {unused}" if unused else ""
            raise EvaluationError(
                f"prompt file {prompt_file} has no prompts for {len(missing)} of {len(class_names)} classes: {missing}. "
                f"The classes are: {class_names}{hint}"
            )
        return {c: list(from_file[c]) for c in class_names}

    if vocab is None:
        from processing.concepts.vocabulary import load_concept_vocabulary

        vocab = load_concept_vocabulary()
    prompts: Dict[str, List[str]] = {}
    missing = []
    for name in class_names:
        concept = vocab.lookup(name)
        texts = concept_prompts(concept) if concept is not None else []
        if texts:
            prompts[name] = texts
        else:
            missing.append(name)
    if missing:
        raise EvaluationError(
            f"no prompt for {len(missing)} of {len(class_names)} classes: {missing} (not concepts of the concept "
            f"vocabulary {getattr(vocab, 'version', '')}). Pass --prompts FILE with a JSON object "
            f'{{"class": ["prompt", ...]}} covering every class: {class_names}'
        )
    return prompts


__all__ = ["class_prompts", "concept_prompts", "load_prompt_file"]
