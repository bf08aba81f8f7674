"""Text normalisation shared by the concept vocabulary and the lexicon extractor.

ECG reports come in German, English and Swedish, in several spellings of the same word
("Vorhofüberlastung", "vorhofsueberlastung", "VorhofÜberlastung"), with hyphenated or closed compounds
("Sinus-Rhythmus", "Sinusrhythmus"), inflected adjectives ("inferiorer", "inferiore") and British or
American spelling. Matching works on *folded tokens*:

1. a token is a run of letters and digits (``#`` counts as a letter: some PTB-XL reports carry ``#``
   where a ``ü`` was lost, e.g. ``f#r``);
2. it is lower-cased, accents are removed (``ä`` -> ``a``), ``ß`` -> ``ss``, and the digraph spellings
   ``ae``/``oe``/``ue`` are folded the same way (``ue`` -> ``u``), so "überdrehter", "ueberdrehter" and
   "uberdrehter" agree; ``ph`` -> ``f`` and ``c`` -> ``k`` make "hypertrophy"/"hypertrofi" and
   "ECG"/"EKG" agree;
3. purely alphabetic tokens lose common inflection endings (-es, -en, -er, -em, -e, -s, -n, -a),
   repeatedly, while at least three letters remain.

Folding is applied identically to synonyms and to report text, so it never needs to produce real words,
only equal keys for equal meanings. A phrase's *key* is the concatenation of its folded tokens (no
separator), which makes "sinus rhythmus", "sinus-rhythmus" and "sinusrhythmus" the same phrase. Because
inflection stripping depends on where a word ends, a phrase gets two keys: the concatenation of the
stemmed tokens (``stem_key``, tolerant of inflected inner words) and the stem of the concatenated
unstemmed tokens (``join_key``, tolerant of compounds split differently).
"""

from __future__ import annotations

import re
import unicodedata
from typing import List, Tuple

# A token: letters/digits, plus '#' which PTB-XL uses for a lost umlaut.
TOKEN_RE = re.compile(r"(?:[^\W_]|#)+")

# Parenthesised plural markers ("extrasystole(n)", "contraction(s)", "extrasystoli(er)") are blanked
# with spaces of the same length so that character offsets into the original report stay valid.
_PLURAL_MARKER_RE = re.compile(r"(?<=[^\W\d_])\((?:n|s|en|e|er|es|a|ar|or)\)", re.IGNORECASE)

_INFLECTION_SUFFIXES = ("es", "en", "er", "em", "e", "s", "n", "a")
_MIN_STEM = 3

_SPECIAL_CHARS = str.maketrans({"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "đ": "d", "ł": "l", "#": "u"})

_FOLD_CACHE: dict = {}
_FOLD_CACHE_LIMIT = 500_000


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def stem(folded: str) -> str:
    """Strip inflection endings from a folded, purely alphabetic token (see module docstring)."""
    if not folded.isalpha():
        return folded
    changed = True
    while changed:
        changed = False
        for suffix in _INFLECTION_SUFFIXES:
            if folded.endswith(suffix) and len(folded) - len(suffix) >= _MIN_STEM:
                folded = folded[: -len(suffix)]
                changed = True
                break
    return folded


def fold_token(token: str) -> Tuple[str, str]:
    """Return ``(folded, stemmed)`` for one raw token; results are cached."""
    cached = _FOLD_CACHE.get(token)
    if cached is not None:
        return cached
    folded = token.lower().translate(_SPECIAL_CHARS)
    if not folded.isascii():
        folded = _strip_accents(folded).translate(_SPECIAL_CHARS)
    folded = folded.replace("ae", "a").replace("oe", "o").replace("ue", "u").replace("ph", "f").replace("c", "k")
    result = (folded, stem(folded))
    if len(_FOLD_CACHE) >= _FOLD_CACHE_LIMIT:
        _FOLD_CACHE.clear()
    _FOLD_CACHE[token] = result
    return result


def prepare_text(text: str) -> str:
    """Blank parenthesised plural markers; the result has exactly the length of ``text``."""
    if "(" in text:
        text = _PLURAL_MARKER_RE.sub(lambda m: " " * len(m.group(0)), text)
    return text


def tokenize(text: str) -> List[Tuple[int, int, str, str]]:
    """Split ``text`` into ``(start, end, folded, stemmed)`` tokens with offsets into ``text``."""
    prepared = prepare_text(text)
    return [(m.start(), m.end(), *fold_token(m.group(0))) for m in TOKEN_RE.finditer(prepared)]


def phrase_keys(phrase: str) -> Tuple[str, str]:
    """The two matching keys ``(stem_key, join_key)`` of a phrase (see module docstring)."""
    tokens = tokenize(phrase)
    stem_key = "".join(t[3] for t in tokens)
    join_key = stem("".join(t[2] for t in tokens))
    return stem_key, join_key


def normalize_phrase(phrase: str) -> str:
    """A readable normal form of a phrase: its stemmed folded tokens joined by single spaces."""
    return " ".join(t[3] for t in tokenize(phrase))
