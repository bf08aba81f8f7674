"""Deterministic English/German/Swedish entity extraction from ECG reports, with no model.

How a report is read:

1. It is split into tokens with character offsets and each token is folded (case, umlauts, accents,
   inflection endings; see :mod:`processing.concepts.text_folding`).
2. Concept names and synonyms of the vocabulary are matched leftmost-longest over the token stream.
   A phrase matches whether its words are written apart, hyphenated or closed up as a German compound
   ("Sinus-Rhythmus" = "Sinusrhythmus"). A token that matches nothing but *ends* in a one-word synonym
   of at least six letters, after at least four letters of modifier, is read as a German compound with
   that head ("Hinterwandspitzeninfarkt" -> myocardial infarction).
3. Negation and uncertainty cues are matched the same way on the remaining tokens. A cue that stands
   before a finding ("kein", "no", "V.a.", "possible", "såsom vid") applies to the first finding that
   starts within four tokens after it, and through coordinating words ("oder", "or", "eller", "und",
   "and") to the findings listed after that one, also over a comma list that ends in such a word. A cue that stands after a finding ("ausgeschlossen",
   "nicht auszuschließen", "bör övervägas", "cannot be excluded") applies to the finding that ends at
   most three tokens before it, and through coordinating words to those listed before. Some words
   ("wahrscheinlich", "möglich", "sannolikt") are read as following a finding when they directly
   follow one and as preceding otherwise. Scope never crosses a sentence end (``. ; ! ?`` or a line
   break; a full stop after an abbreviation or an ordinal number is not a sentence end) nor a contrast
   word ("aber", "but", "sonst", "otherwise", "men"). Phrases that say a property could not be determined
   ("ålder ej bestämbar", "nicht bestimmbar", "cannot be determined") are read whole, so their negation word
   negates nothing.
4. Negation wins over uncertainty when both reach a finding.

PTB-XL reports are sequences of statements without punctuation ("sinusrhythmus verdacht auf
p-sinistrocardiale linkstyp ..."), which is why a cue reaches only its nearest finding unless an
explicit coordinating word links further ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..concepts.text_folding import TOKEN_RE, fold_token, prepare_text, stem, tokenize
from ..concepts.vocabulary import ConceptVocabulary, load_concept_vocabulary
from .result import ABSENT, PRESENT, UNCERTAIN

PRE_WINDOW = 4  # tokens between a preceding cue and its first finding
POST_WINDOW = 3  # tokens between a finding and a following cue
CHAIN_GAP = 3  # non-connector tokens allowed between two coordinated findings
COMPOUND_MIN_HEAD = 6
COMPOUND_MIN_MODIFIER = 4

# Cue phrases (folded like synonyms). "pre" cues scope forwards, "post" cues backwards, "both" cues
# backwards when they directly follow a finding and forwards otherwise.
NEGATION_PRE = (
    "no", "not", "without", "absence of", "absent", "negative for", "free of", "no evidence of", "no signs of",
    "no sign of", "no evidence for", "rules out", "ruled out for", "no longer", "nor", "neither", "never",
    "kein", "keine", "keinen", "keiner", "keinem", "keines", "nicht", "ohne", "kein hinweis auf", "keine hinweise auf",
    "kein anhalt für", "keine zeichen", "keine zeichen einer", "keine zeichen eines", "ausschluss", "weder", "fehlen von",
    "inget", "ingen", "inga", "ej", "inte", "utan", "ingen tecken på", "inga tecken på",
)
NEGATION_POST = (
    "ausgeschlossen", "excluded", "ruled out", "is excluded", "was excluded", "not seen", "not present", "absent",
    "nicht nachweisbar", "nicht vorhanden", "nicht mehr nachweisbar", "nicht mehr vorhanden", "verschwunden",
    "no longer present", "no longer seen", "uteslutet", "utesluten", "uteslutes", "resolved", "rückläufig nicht",
)
UNCERTAIN_PRE = (
    "possible", "possibly", "probable", "probably", "likely", "unlikely", "suspected", "suspicion of", "suspicious for",
    "suggestive of", "suggesting", "suggests", "suggest", "consider", "cannot exclude", "cannot rule out", "can not exclude",
    "may be", "might be", "may represent", "could be", "questionable", "borderline", "query", "rule out",
    "v a", "verdacht auf", "verdacht", "vermutlich", "möglicherweise", "fraglich", "fragliche", "fraglicher",
    "eventuell", "evtl", "dd", "differentialdiagnostisch", "differentialdiagnose", "ggf", "grenzwertig", "angedeutet",
    "hinweis auf", "hinweise auf", "zeichen einer", "zeichen eines", "am ehesten", "nicht sicher",
    "möjlig", "misstänkt", "misstanke om", "misstänkt för", "överväg", "trolig", "troligen", "eventuellt",
    "såsom vid", "som vid", "tyder på", "talar för", "förenligt med",
)
UNCERTAIN_POST = (
    "nicht auszuschliessen", "nicht auszuschließen", "nicht sicher auszuschliessen", "nicht ausgeschlossen",
    "nicht sicher ausgeschlossen", "kann nicht ausgeschlossen werden", "nicht mit sicherheit auszuschliessen",
    "vermutet", "fraglich", "cannot be excluded", "can not be excluded", "cannot be ruled out", "can not be ruled out",
    "not excluded", "not ruled out", "is possible", "is likely", "is suspected", "is probable", "is questionable",
    "kan ej uteslutas", "kan inte uteslutas", "bör övervägas", "bör uteslutas", "övervägas", "ifrågasätts",
)
UNCERTAIN_BOTH = ("wahrscheinlich", "möglich", "moeglich", "möjligen", "sannolikt", "suspekt")
BREAK_WORDS = (
    "aber", "jedoch", "sonst", "ansonsten", "but", "however", "otherwise", "except", "although", "though", "whereas",
    "men", "eljest", "i övrigt", "dock", "ausser", "außer", "bei sonst",
)
CONNECTORS = (
    "or", "and", "and or", "nor", "as well as", "oder", "und", "bzw", "beziehungsweise", "sowie", "noch", "respektive",
    "eller", "och", "samt", "resp",
)
# "Cannot be determined" phrases: their "ej"/"nicht"/"not" qualifies the determination (of an infarct's age, of
# the axis), not a finding. They are read as one neutral cue so that the negation word inside does not negate
# the next statement ("inferior infarkt ålder ej bestämbar st-t sänkning" states the ST depression).
NEUTRAL = (
    "ålder ej bestämbar", "ålder ej bestämmbar", "ej bestämbar", "ej bestämmbar", "ej bedömbar", "ej säkert bedömbar",
    "nicht bestimmbar", "nicht sicher bestimmbar", "nicht beurteilbar", "nicht sicher beurteilbar",
    "not determinable", "not determined", "cannot be determined", "can not be determined", "not assessable",
    "age not determined", "age cannot be determined",
)
# A full stop after one of these (folded) tokens does not end a sentence.
ABBREVIATIONS = {
    fold_token(t)[0]
    for t in (
        "ca", "bzw", "insbes", "unbest", "unspez", "chron", "krit", "amplitudkrit", "ggf", "evtl", "vs", "dr", "path",
        "rep", "neg", "pos", "li", "re", "intraventr", "indiff", "novod", "amp", "max", "min", "approx", "eg", "ie", "etc",
        "inkl", "incl", "st", "vgl", "jmf", "resp", "art", "mg", "ms", "abl", "ableit", "re", "sog", "z", "n", "u", "o",
        "v", "a", "b", "ekg", "ecg", "no", "nr", "freq", "hf", "typ",
    )
}


@dataclass(frozen=True)
class _Cue:
    kind: str  # "negation" | "uncertainty" | "break" | "connector" | "neutral"
    direction: str  # "pre" | "post" | "both" | "none"


class PhraseIndex:
    """Leftmost-longest matching of folded phrases over folded token streams.

    Each phrase is indexed under both keys of :func:`~processing.report_normalization.phrase_keys`; the
    walk over text tokens stops as soon as the concatenated tokens are no prefix of any indexed key.
    """

    def __init__(self, phrases: Iterable[Tuple[str, object]]):
        self.keys: Dict[str, object] = {}
        self.stem_prefixes: Set[str] = set()
        self.raw_prefixes: Set[str] = set()
        self.max_tokens = 1
        self.single_token_keys: Dict[str, object] = {}
        for phrase, payload in phrases:
            tokens = tokenize(phrase)
            if not tokens:
                continue
            stem_key = "".join(t[3] for t in tokens)
            raw_key = "".join(t[2] for t in tokens)
            join_key = stem(raw_key)
            for key in (stem_key, join_key):
                self.keys.setdefault(key, payload)
                self.stem_prefixes.update(key[:i] for i in range(1, len(key) + 1))
            self.raw_prefixes.update(raw_key[:i] for i in range(1, len(raw_key) + 1))
            self.max_tokens = max(self.max_tokens, len(tokens))
            if len(tokens) == 1:
                self.single_token_keys.setdefault(stem_key, payload)
        self._stem_cache: Dict[str, str] = {}

    def match_at(self, raws: Sequence[str], stems: Sequence[str], start: int, stop: int,
                 hard_break_after: Sequence[bool]) -> Optional[Tuple[int, object]]:
        """Longest match starting at token ``start`` and ending before ``stop``: ``(end_index, payload)``."""
        keys = self.keys
        stem_prefixes = self.stem_prefixes
        raw_prefixes = self.raw_prefixes
        best = None
        stem_acc = ""
        raw_acc = ""
        limit = min(stop, start + self.max_tokens)
        for k in range(start, limit):
            stem_acc += stems[k]
            raw_acc += raws[k]
            alive = False
            if stem_acc in stem_prefixes:
                alive = True
                payload = keys.get(stem_acc)
                if payload is not None:
                    best = (k, payload)
            if raw_acc in raw_prefixes:
                alive = True
                joined = self._stem_cache.get(raw_acc)
                if joined is None:
                    joined = stem(raw_acc)
                    if len(self._stem_cache) < 200_000:
                        self._stem_cache[raw_acc] = joined
                payload = keys.get(joined)
                if payload is not None and (best is None or best[0] < k):
                    best = (k, payload)
            if not alive or hard_break_after[k]:
                break
        return best


class LexiconExtractor:
    """Rule-based extractor over a :class:`~processing.concepts.ConceptVocabulary`.

    Call :meth:`extract` on one report; it returns a list of ``{"span", "concept", "status"}`` dicts in
    report order. Instances are reusable and hold no per-report state.
    """

    name = "lexicon"

    def __init__(self, vocabulary: Optional[ConceptVocabulary] = None):
        self.vocabulary = vocabulary if vocabulary is not None else load_concept_vocabulary()
        self.model_name = f"lexicon/vocabulary-{self.vocabulary.version}"
        self._concepts = PhraseIndex((text, concept.name) for concept in self.vocabulary for text in concept.texts)
        cue_phrases: List[Tuple[str, _Cue]] = []
        for phrases, kind, direction in (
            (NEGATION_PRE, "negation", "pre"), (NEGATION_POST, "negation", "post"),
            (UNCERTAIN_PRE, "uncertainty", "pre"), (UNCERTAIN_POST, "uncertainty", "post"),
            (UNCERTAIN_BOTH, "uncertainty", "both"), (BREAK_WORDS, "break", "none"), (CONNECTORS, "connector", "none"),
            (NEUTRAL, "neutral", "none"),
        ):
            cue_phrases += [(p, _Cue(kind, direction)) for p in phrases]
        self._cues = PhraseIndex(cue_phrases)
        heads = {key: name for key, name in self._concepts.single_token_keys.items() if len(key) >= COMPOUND_MIN_HEAD}
        self._compound_heads = heads
        self._compound_head_lengths = sorted({len(k) for k in heads}, reverse=True)

    # ------------------------------------------------------------------ tokenisation with boundaries
    @staticmethod
    def _separator_flags(text: str, tokens: List[Tuple[int, int, str, str]]) -> Tuple[List[bool], List[bool]]:
        """Per token: does a sentence end (hard) or a comma (soft) follow it?"""
        n = len(tokens)
        hard = [False] * n
        soft = [False] * n
        for i in range(n):
            end = tokens[i][1]
            nxt = tokens[i + 1][0] if i + 1 < n else len(text)
            if nxt - end == 1 and text[end] == " ":
                continue
            sep = text[end:nxt]
            if not sep or sep.isspace() and "\n" not in sep:
                continue
            if "\n" in sep or ";" in sep or "!" in sep or "?" in sep:
                hard[i] = True
            elif "." in sep:
                hard[i] = LexiconExtractor._full_stop_ends_sentence(text, tokens, i, sep)
            if "," in sep:
                soft[i] = True
        return hard, soft

    @staticmethod
    def _full_stop_ends_sentence(text: str, tokens, i: int, sep: str) -> bool:
        after_dot = sep[sep.index(".") + 1:]
        if i + 1 < len(tokens) and after_dot == "":
            return False  # "v.a", "1.grades", "intraventr.leitung": no space after the dot
        raw = text[tokens[i][0]:tokens[i][1]]
        folded = tokens[i][2]
        if folded in ABBREVIATIONS:
            return False
        if raw.isdigit() and len(raw) <= 2 and i + 1 < len(tokens):
            return False  # German ordinal: "AV-Block 1. Grades"
        if len(raw) == 1 and i > 0 and text[tokens[i - 1][1]:tokens[i][0]] == ".":
            return False  # last letter of a dotted abbreviation: "v.a. ..."
        return True

    # ------------------------------------------------------------------ extraction
    def extract(self, text: str) -> List[dict]:
        """Entities of one report: ``[{"span", "concept", "status"}, ...]`` in report order."""
        if not text:
            return []
        tokens = [(m.start(), m.end(), *fold_token(m.group(0))) for m in TOKEN_RE.finditer(prepare_text(text))]
        n = len(tokens)
        if n == 0:
            return []
        raws = [t[2] for t in tokens]
        stems = [t[3] for t in tokens]
        hard, soft = self._separator_flags(text, tokens)

        # 1. concepts, leftmost-longest
        matches: List[List] = []  # [first_token, last_token, concept_name, status]
        covered = [False] * n
        i = 0
        concept_index = self._concepts
        while i < n:
            found = concept_index.match_at(raws, stems, i, n, hard)
            if found is None:
                head = self._compound_head(stems[i])
                if head is not None:
                    found = (i, head)
            if found is None:
                i += 1
                continue
            last, name = found
            matches.append([i, last, name, PRESENT])
            for k in range(i, last + 1):
                covered[k] = True
            i = last + 1
        if not matches:
            return []

        # 2. cues on the tokens that no concept covers
        cues: List[Tuple[int, int, _Cue]] = []
        cue_index = self._cues
        i = 0
        while i < n:
            if covered[i]:
                i += 1
                continue
            stop = i
            while stop < n and not covered[stop]:
                stop += 1
            while i < stop:
                found = cue_index.match_at(raws, stems, i, stop, hard)
                if found is None:
                    i += 1
                    continue
                cues.append((i, found[0], found[1]))
                i = found[0] + 1
        if cues:
            self._apply_cues(matches, cues, hard, soft, n)

        entities = []
        seen = set()
        for first, last, name, status in matches:
            span = text[tokens[first][0]:tokens[last][1]]
            key = (span, name, status)
            if key in seen:
                continue
            seen.add(key)
            entities.append({"span": span, "concept": name, "status": status})
        return entities

    def _compound_head(self, token_stem: str) -> Optional[str]:
        length = len(token_stem)
        if length < COMPOUND_MIN_HEAD + COMPOUND_MIN_MODIFIER or not token_stem.isalpha():
            return None
        heads = self._compound_heads
        for size in self._compound_head_lengths:
            if size > length - COMPOUND_MIN_MODIFIER:
                continue
            name = heads.get(token_stem[-size:])
            if name is not None:
                return name
        return None

    def _apply_cues(self, matches, cues, hard, soft, n) -> None:
        # token -> what sits there: ("concept", match index) / ("cue", cue index)
        owner: List[Optional[Tuple[str, int]]] = [None] * n
        for index, (first, last, _, _) in enumerate(matches):
            for k in range(first, last + 1):
                owner[k] = ("concept", index)
        for index, (first, last, _) in enumerate(cues):
            for k in range(first, last + 1):
                owner[k] = ("cue", index)
        statuses: Dict[int, Set[str]] = {}

        def mark(match_index: int, kind: str) -> None:
            statuses.setdefault(match_index, set()).add(kind)

        for first, last, cue in cues:
            if cue.kind not in ("negation", "uncertainty"):
                continue
            direction = cue.direction
            if direction == "both":
                direction = "post" if self._directly_after_concept(owner, first, hard, soft) else "pre"
            if direction == "pre":
                for match_index in self._forward_scope(owner, cues, last, hard, soft, n):
                    mark(match_index, cue.kind)
            else:
                for match_index in self._backward_scope(owner, cues, first, hard, soft):
                    mark(match_index, cue.kind)
        for match_index, kinds in statuses.items():
            matches[match_index][3] = ABSENT if "negation" in kinds else UNCERTAIN

    @staticmethod
    def _directly_after_concept(owner, first: int, hard, soft) -> bool:
        prev = first - 1
        return prev >= 0 and owner[prev] is not None and owner[prev][0] == "concept" and not hard[prev] and not soft[prev]

    @staticmethod
    def _forward_scope(owner, cues, cue_last: int, hard, soft, n) -> List[int]:
        """Findings reached by a cue ending at token ``cue_last``.

        After the first finding, a further one is reached when a coordinating word stands between
        them, or when only a comma does and a coordinating word follows later in the same sentence
        ("no Q waves, ST elevation or T inversion").
        """
        reached: List[int] = []
        if hard[cue_last]:
            return reached
        k = cue_last + 1
        gap = 0
        connected = True  # the first finding needs no connector
        comma = False
        limit = PRE_WINDOW
        while k < n:
            slot = owner[k]
            if slot is not None and slot[0] == "concept":
                if not connected and not (comma and LexiconExtractor._connector_ahead(owner, cues, k, hard, n)):
                    break
                reached.append(slot[1])
                while k + 1 < n and owner[k + 1] == slot:
                    k += 1
                if hard[k]:
                    break
                gap, connected, limit = 0, False, CHAIN_GAP
                comma = soft[k]
            elif slot is not None and slot[0] == "cue":
                cue = cues[slot[1]][2]
                if cue.kind == "break":
                    break
                if cue.kind == "connector":
                    connected = True
                elif reached and cue.kind in ("negation", "uncertainty") and cue.direction == "pre":
                    break  # a new cue starts its own scope
                k = cues[slot[1]][1]
                comma = comma or soft[k]
                if hard[k]:
                    break
            else:
                gap += 1
                if gap > limit or hard[k]:
                    break
                comma = comma or soft[k]
            k += 1
        return reached

    @staticmethod
    def _connector_ahead(owner, cues, k: int, hard, n) -> bool:
        """Is there a coordinating word after token ``k`` before the sentence ends?"""
        while k < n:
            slot = owner[k]
            if slot is not None and slot[0] == "cue":
                kind = cues[slot[1]][2].kind
                if kind == "connector":
                    return True
                if kind == "break":
                    return False
            if hard[k]:
                return False
            k += 1
        return False

    @staticmethod
    def _backward_scope(owner, cues, cue_first: int, hard, soft) -> List[int]:
        """Findings reached by a cue starting at token ``cue_first`` that looks backwards."""
        reached: List[int] = []
        k = cue_first - 1
        gap = 0
        connected = True
        limit = POST_WINDOW
        while k >= 0:
            if hard[k] or (not reached and soft[k]):
                break
            slot = owner[k]
            if slot is not None and slot[0] == "concept":
                if not connected:
                    break
                reached.append(slot[1])
                while k - 1 >= 0 and owner[k - 1] == slot:
                    k -= 1
                gap, connected, limit = 0, False, CHAIN_GAP
            elif slot is not None and slot[0] == "cue":
                cue = cues[slot[1]][2]
                if cue.kind == "break" or (cue.kind in ("negation", "uncertainty") and cue.direction == "post"):
                    break
                if cue.kind == "connector":
                    connected = True
                k = cues[slot[1]][0]
            else:
                gap += 1
                if gap > limit:
                    break
            k -= 1
        return reached


def extract_lexicon(texts: Iterable[str], vocabulary: Optional[ConceptVocabulary] = None) -> List[List[dict]]:
    """Convenience: run one :class:`LexiconExtractor` over several reports."""
    extractor = LexiconExtractor(vocabulary)
    return [extractor.extract(t) for t in texts]
