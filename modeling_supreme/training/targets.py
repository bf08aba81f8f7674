"""Pre-training targets: entity lines of the training records -> a multi-label matrix over concepts,
and the query texts each concept is trained with.

Present is positive; absent (the report denies it) is negative; uncertain is configurable
(``ignore`` masks it out of the loss with -100); not mentioned is negative by default (``ignore`` masks
it, which the zero-shot study measured as much worse: with ignored negatives the model learns that
every concept is present). A concept mentioned twice keeps its strongest statement (present >
uncertain > absent). With ``ancestors`` (see :mod:`processing.concepts.ontology`) a present or
uncertain concept also marks its is-a ancestors ("anteroseptal myocardial infarction" -> "myocardial
infarction") where the report says nothing else about them. ``withheld`` concepts (the unseen-concept
protocol) never become targets, neither mentioned nor as ancestors. The concepts seen at least
``min_count`` times form the training vocabulary, most frequent first.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .errors import PretrainingError

UNCERTAIN_POLICIES = ("ignore", "positive", "negative")
NOT_MENTIONED_POLICIES = ("negative", "ignore")
_RANK = {"absent": 0, "uncertain": 1, "present": 2}
QUERY_VARIANTS = ("description", "name", "synonyms")
IGNORE_INDEX = -100  # the model's loss ignores these pairs (SuPreMEModel.compute_loss)


def record_ids(split) -> list:
    """The record_id column without decoding signals."""
    return list(split.with_format(None)["record_id"])


def load_entities(path: str) -> dict:
    """record_id -> entities line; clear errors for a missing, empty or unreadable file."""
    from processing.reports.entities_file import read_entities_file

    if not path or not os.path.isfile(path):
        raise PretrainingError(f"entities file {path!r} not found; create it with examples/extract_entities.py")
    if os.path.getsize(path) == 0:
        raise PretrainingError(f"entities file {path} is empty; run examples/extract_entities.py on the training corpus")
    try:
        lines = read_entities_file(path)
    except ValueError as err:
        raise PretrainingError(f"entities file {path} is not valid: {err}") from None
    if not lines:
        raise PretrainingError(f"entities file {path} holds no records")
    return lines


@dataclass
class TrainingTargets:
    concepts: list  # concept names, in target order
    counts: list  # positives per concept among the used training records
    rows: np.ndarray  # indices into the training split
    targets: np.ndarray  # (rows, concepts) float32 in {0, 1, IGNORE_INDEX}
    report: dict  # what was dropped and why


def expand_ancestors(status: dict, ancestors) -> dict:
    """Add the is-a ancestors of present/uncertain concepts to one record's {concept: status}.

    An implied statement fills an ancestor the report does not mention, or turns an uncertain one
    present; what the report says about the ancestor itself otherwise stands (an explicit "no
    infarction" stays absent next to a "possible inferior infarction").
    """
    out = dict(status)
    for concept, state in status.items():
        if state not in ("present", "uncertain"):
            continue
        for parent in ancestors.get(concept, ()):
            stated = status.get(parent)
            if (stated is None and _RANK[state] > _RANK.get(out.get(parent), -1)) or (stated == "uncertain" and state == "present"):
                out[parent] = state
    return out


def build_targets(train_ids, all_ids, entities, min_count, uncertain="ignore", allow_unknown=False,
                  not_mentioned="negative", ancestors=None, withheld=()) -> TrainingTargets:
    """Turn entity lines into a multi-label target matrix over the frequent concepts.

    ``ancestors``: None, or {concept: ancestor names} (``processing.concepts.ontology.load_concept_ancestors()``).
    ``withheld``: concept names kept out of the targets entirely.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise PretrainingError(f"--uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    if not_mentioned not in NOT_MENTIONED_POLICIES:
        raise PretrainingError(f"--not_mentioned must be one of {NOT_MENTIONED_POLICIES}, got {not_mentioned!r}")
    withheld = set(withheld)
    if withheld:
        # A misspelt name would withhold nothing and the "unseen" concept would silently be a seen one.
        from difflib import get_close_matches

        from processing.concepts.vocabulary import load_concept_vocabulary

        vocab = load_concept_vocabulary()
        unknown_names = sorted(name for name in withheld if name not in vocab)
        if unknown_names:
            hints = {name: get_close_matches(name, list(vocab.names), n=2) for name in unknown_names}
            raise PretrainingError(
                "--withhold_concepts names no concept of the vocabulary: "
                + "; ".join(f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                            for name, close in hints.items())
            )
    all_ids = set(all_ids)
    unknown = [rid for rid in entities if rid not in all_ids]
    if unknown and len(unknown) == len(entities):
        raise PretrainingError(
            f"none of the {len(entities)} records in the entities file belongs to this corpus (for example "
            f"{unknown[:3]}, while the corpus has ids like {sorted(all_ids)[:3]}); was it extracted from another dataset?"
        )
    if unknown and not allow_unknown:
        raise PretrainingError(
            f"{len(unknown)} of {len(entities)} entity lines name records the corpus does not have (for example "
            f"{unknown[:3]}); extract entities from the same corpus, or pass --allow_unknown_entity_records if these "
            "records were left out on purpose (e.g. skipped as unreadable)"
        )
    statuses_by_row, rows, missing, errors, no_report = [], [], 0, 0, 0
    for row, rid in enumerate(train_ids):
        line = entities.get(rid)
        if line is None:
            missing += 1
            continue
        if line.get("error"):
            errors += 1
            continue
        if line.get("no_report"):  # an empty report says nothing: not a negative for every concept
            no_report += 1
            continue
        statuses_by_row.append(record_status(line, ancestors, withheld))
        rows.append(row)
    if not rows:
        raise PretrainingError(
            f"no training record has a usable entities line ({missing} without a line, {errors} with an extraction error, "
            f"{no_report} without a report)"
        )
    counts = Counter()
    for status in statuses_by_row:
        counts.update(c for c, s in status.items() if s == "present" or (s == "uncertain" and uncertain == "positive"))
    concepts = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    if not concepts:
        best = counts.most_common(3)
        raise PretrainingError(
            f"no concept is positive in at least {min_count} of the {len(rows)} training records "
            f"(most frequent: {best or 'none'}); lower --min_concept_count or check the entities file"
        )
    targets = target_matrix(statuses_by_row, concepts, uncertain, not_mentioned)
    report = {"training_records": len(train_ids), "used_records": len(rows), "records_without_entities": missing,
              "records_with_extraction_error": errors, "records_without_report": no_report,
              "unknown_entity_records": len(unknown),
              "concepts_seen": len(counts), "concepts_kept": len(concepts), "min_concept_count": min_count,
              "not_mentioned": not_mentioned, "ancestors": bool(ancestors), "withheld": sorted(withheld)}
    return TrainingTargets(concepts, [counts[c] for c in concepts], np.asarray(rows), targets, report)


def record_status(line: dict, ancestors=None, withheld=()) -> dict:
    """One entities line as {concept: present/absent/uncertain}, ancestors added, withheld concepts dropped."""
    status = {}
    for entity in line.get("entities") or []:
        concept, state = entity.get("concept"), entity.get("status")
        # A concept mentioned twice keeps its strongest statement: present > uncertain > absent.
        rank = _RANK.get(state, -1)
        if concept and rank > _RANK.get(status.get(concept), -1):
            status[concept] = state
    if ancestors:
        status = expand_ancestors(status, ancestors)
    return {c: s for c, s in status.items() if c not in withheld}


def target_matrix(statuses, concepts, uncertain="ignore", not_mentioned="negative") -> np.ndarray:
    """(records, concepts) float32 targets in {0, 1, IGNORE_INDEX} from per-record statuses."""
    index = {c: i for i, c in enumerate(concepts)}
    fill = 0.0 if not_mentioned == "negative" else IGNORE_INDEX
    targets = np.full((len(statuses), len(concepts)), fill, dtype=np.float32)
    value = {"present": 1.0, "absent": 0.0, "uncertain": {"ignore": IGNORE_INDEX, "positive": 1.0, "negative": 0.0}[uncertain]}
    for r, status in enumerate(statuses):
        for concept, state in status.items():
            if concept in index and state in value:
                targets[r, index[concept]] = value[state]
    return targets


def concept_query_texts(concepts, variants=("description", "name")):
    """Per concept, the texts sampled as its query: the vocabulary's description, its name and/or its
    spelled-out synonyms. The first text of each concept (the description) is its canonical query."""
    from processing.concepts.vocabulary import load_concept_vocabulary

    vocab = load_concept_vocabulary()
    texts = []
    for name in concepts:
        concept = vocab.get(name) if name in vocab else None
        options = []
        for variant in variants:
            if variant == "description" and concept is not None and concept.description:
                options.append(concept.description)
            elif variant == "name":
                options.append(name)
            elif variant == "synonyms" and concept is not None:
                # Spelled-out synonyms only: abbreviations ("lbbb", "sr") say little to a text encoder.
                options.extend(s for s in concept.synonyms if len(s) > 5 and " " in s)
            elif variant not in QUERY_VARIANTS:
                raise PretrainingError(f"unknown query text variant {variant!r}; choose from {', '.join(QUERY_VARIANTS)}")
        unique = list(dict.fromkeys(options))
        texts.append(unique or [name])
    return texts


__all__ = ["IGNORE_INDEX", "NOT_MENTIONED_POLICIES", "expand_ancestors", "QUERY_VARIANTS", "UNCERTAIN_POLICIES", "TrainingTargets", "build_targets", "concept_query_texts", "load_entities", "record_ids", "record_status", "target_matrix"]
