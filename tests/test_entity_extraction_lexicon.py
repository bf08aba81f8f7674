"""The lexicon backend: normalisation, abbreviations, compounds, negation/uncertainty scope, odd input, PTB-XL quality."""

import importlib.util
import sys
from pathlib import Path

import pytest

from processing import extract_entities
from processing.reports.extraction import decode_report, report_sha256
from processing.reports.lexicon import LexiconExtractor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lexicon() -> LexiconExtractor:
    return LexiconExtractor()


def found(lexicon, text):
    """{concept: status} of a report (asserts each span is a verbatim part of the report)."""
    out = {}
    for entity in lexicon.extract(text):
        assert entity["span"] and entity["span"] in text, (entity, text)
        assert set(entity) == {"span", "concept", "status"}
        out[entity["concept"]] = entity["status"]
    return out


@pytest.mark.parametrize(
    "text, concept",
    [
        ("Sinusrhythmus", "sinus rhythm"), ("Sinus-Rhythmus", "sinus rhythm"), ("sinus rhythmus", "sinus rhythm"),
        ("SR", "sinus rhythm"), ("normal sinus rhythm", "sinus rhythm"), ("sinusrytm", "sinus rhythm"),
        ("LSB", "left bundle branch block"), ("Linksschenkelblock", "left bundle branch block"),
        ("kompletter LSB", "left bundle branch block"), ("LBBB", "left bundle branch block"),
        ("RSB", "right bundle branch block"), ("inkompletter RSB", "incomplete right bundle branch block"),
        ("unvollständigen Rechtsschenkelblocks", "incomplete right bundle branch block"),
        ("AV-Block I", "first degree AV block"), ("AV-Block I°", "first degree AV block"),
        ("AV Block 1. Grades", "first degree AV block"), ("a-v block i", "first degree AV block"),
        ("1st degree A-V block", "first degree AV block"), ("AV-Block III", "third degree AV block"),
        ("AV-Block II Typ Wenckebach", "Mobitz type I AV block"), ("LVH", "left ventricular hypertrophy"),
        ("Linkshypertrophie", "left ventricular hypertrophy"), ("LAHB", "left anterior fascicular block"),
        ("VES", "premature ventricular contraction"), ("ventrikuläre Extrasystolen", "premature ventricular contraction"),
        ("SVES", "premature atrial contraction"), ("VHF", "atrial fibrillation"), ("Vorhofflimmern", "atrial fibrillation"),
        ("vorhofflattern", "atrial flutter"), ("ST-Senkung", "ST depression"), ("ST-Strecken-Hebung", "ST elevation"),
        ("QT-Verlängerung", "prolonged QT interval"), ("qt-verlÄngerung", "prolonged QT interval"),
        ("überdrehter Linkstyp", "left axis deviation"), ("ueberdrehter linkstyp", "left axis deviation"),
        ("uberdrehter linkstyp", "left axis deviation"), ("Vorhofsüberlastung links", "left atrial enlargement"),
        ("vorhofsueberlastung links", "left atrial enlargement"), ("P-sinistrocardiale", "left atrial enlargement"),
        ("ischaemia", "myocardial ischemia"), ("ischemia", "myocardial ischemia"), ("Ischämie", "myocardial ischemia"),
        ("förmaksflimmer", "atrial fibrillation"), ("vänster kammarhypertrofi", "left ventricular hypertrophy"),
        ("premature ventricular contraction(s)", "premature ventricular contraction"),
        ("supraventrikuläre Extrasystole(n)", "premature atrial contraction"),
        ("Hinterwandinfarkt", "inferior myocardial infarction"), ("inferiorer Infarkt", "inferior myocardial infarction"),
        ("old inferior myocardial infarction", "inferior myocardial infarction"),
        ("Schrittmacher-EKG", "pacing rhythm"), ("ECG normal", "normal ECG"), ("normales EKG", "normal ECG"),
    ],
)
def test_synonyms_abbreviations_and_spellings(lexicon, text, concept):
    assert found(lexicon, text) == {concept: "present"}


def test_unlisted_german_compound_is_read_by_its_head(lexicon):
    # "Hinterwandspitzeninfarkt" is in no synonym list; its head "Infarkt" is.
    assert found(lexicon, "alter Hinterwandspitzeninfarkt") == {"myocardial infarction": "present"}
    # A short modifier is not enough: "abnormal" must not be read as "normal".
    assert found(lexicon, "abnormal") == {}


def test_longest_match_wins(lexicon):
    assert found(lexicon, "incomplete right bundle branch block") == {"incomplete right bundle branch block": "present"}
    assert found(lexicon, "sinus bradycardia") == {"sinus bradycardia": "present"}
    assert found(lexicon, "tachykardes Vorhofflimmern") == {"rapid atrial fibrillation": "present"}


@pytest.mark.parametrize(
    "text, expected",
    [
        # German negation
        ("Kein Vorhofflimmern.", {"atrial fibrillation": "absent"}),
        ("keine ST-Hebung", {"ST elevation": "absent"}),
        ("Sinusrhythmus, kein Hinweis auf Infarkt", {"sinus rhythm": "present", "myocardial infarction": "absent"}),
        ("Vorhofflimmern ausgeschlossen", {"atrial fibrillation": "absent"}),
        ("Linksschenkelblock nicht nachweisbar", {"left bundle branch block": "absent"}),
        ("ohne Erregungsrückbildungsstörung", {"ST/T change": "absent"}),
        # German uncertainty
        ("V.a. Hinterwandinfarkt", {"inferior myocardial infarction": "uncertain"}),
        ("v.a. lsb", {"left bundle branch block": "uncertain"}),
        ("Verdacht auf LVH", {"left ventricular hypertrophy": "uncertain"}),
        ("wahrscheinlich inferiorer Infarkt", {"inferior myocardial infarction": "uncertain"}),
        ("inferiorer Infarkt nicht auszuschließen", {"inferior myocardial infarction": "uncertain"}),
        ("septaler infarkt nicht auszuschliessen", {"anteroseptal myocardial infarction": "uncertain"}),
        ("anterolateraler infarkt möglich", {"anterolateral myocardial infarction": "uncertain"}),
        # English
        ("No ST elevation.", {"ST elevation": "absent"}),
        ("without evidence of atrial fibrillation", {"atrial fibrillation": "absent"}),
        ("atrial fibrillation is excluded", {"atrial fibrillation": "absent"}),
        ("possible left atrial enlargement", {"left atrial enlargement": "uncertain"}),
        ("probable inferior infarct", {"inferior myocardial infarction": "uncertain"}),
        ("anterior infarct cannot be excluded", {"anterior myocardial infarction": "uncertain"}),
        # Swedish
        ("inget förmaksflimmer", {"atrial fibrillation": "absent"}),
        ("inferior infarkt bör övervägas", {"inferior myocardial infarction": "uncertain"}),
        ("lateral myokardskada kan ej uteslutas", {"lateral myocardial infarction": "uncertain"}),
    ],
)
def test_negation_and_uncertainty(lexicon, text, expected):
    assert found(lexicon, text) == expected


def test_cue_scope_is_limited(lexicon):
    # A cue reaches through "or"/"oder" but not into the next sentence or the next PTB-XL statement.
    assert found(lexicon, "No ST elevation or T wave inversion. Left bundle branch block.") == {
        "ST elevation": "absent", "T wave inversion": "absent", "left bundle branch block": "present"}
    assert found(lexicon, "kein Vorhofflimmern oder Vorhofflattern; Linksschenkelblock") == {
        "atrial fibrillation": "absent", "atrial flutter": "absent", "left bundle branch block": "present"}
    assert found(lexicon, "sinusrhythmus verdacht auf p-sinistrocardiale linkstyp") == {
        "sinus rhythm": "present", "left atrial enlargement": "uncertain", "leftward axis": "present"}
    # A comma list is followed when it ends in a coordinating word, not otherwise.
    assert found(lexicon, "no Q waves, ST elevation or T inversion") == {
        "abnormal Q waves": "absent", "ST elevation": "absent", "T wave inversion": "absent"}
    assert found(lexicon, "kein Vorhofflimmern, Linksschenkelblock") == {
        "atrial fibrillation": "absent", "left bundle branch block": "present"}
    # A cue far before a finding does not reach it.
    assert found(lexicon, "no change compared with the tracing of last year atrial fibrillation") == {
        "atrial fibrillation": "present"}
    # "aber"/"but" ends the scope.
    assert found(lexicon, "kein Infarkt, aber Linkshypertrophie") == {
        "myocardial infarction": "absent", "left ventricular hypertrophy": "present"}
    # A post-cue does not reach back over a comma: here "wahrscheinlich" introduces the next finding.
    assert found(lexicon, "t abnormal, wahrscheinlich inferiorer myokardschaden") == {
        "T wave abnormality": "present", "inferior myocardial infarction": "uncertain"}
    # "nicht auszuschliessen" is uncertainty, not negation, although it contains "nicht".
    assert found(lexicon, "Infarkt nicht auszuschliessen")["myocardial infarction"] == "uncertain"


def test_negation_wins_over_uncertainty(lexicon):
    assert found(lexicon, "kein sicherer Hinweis auf Vorhofflimmern, wahrscheinlich")["atrial fibrillation"] == "absent"


def test_sentence_end_versus_abbreviation_full_stops(lexicon):
    # "ca." and "v.a." do not end a sentence; "Grades." before a new statement does.
    assert found(lexicon, "Frequenz ca. 80/min. V.a. Vorhofflimmern") == {"atrial fibrillation": "uncertain"}
    assert found(lexicon, "Kein AV-Block 1. Grades. Vorhofflimmern.") == {
        "first degree AV block": "absent", "atrial fibrillation": "present"}


def test_empty_and_whitespace_reports(lexicon):
    for text in ("", "   ", "\n\t", "---", "12:34"):
        assert lexicon.extract(text) == []
    result = extract_entities("")
    assert result.entities == [] and result.error is None
    assert extract_entities(None).entities == []


def _python_calls(function, *args) -> int:
    """How many Python-level function calls ``function(*args)`` makes: a work count that, unlike a
    duration, does not depend on the machine or its load."""
    calls = [0]

    def count(frame, event, arg):
        if event == "call":
            calls[0] += 1

    sys.setprofile(count)
    try:
        function(*args)
    finally:
        sys.setprofile(None)
    return calls[0]


def test_very_long_report_is_linear_and_complete(lexicon):
    sentence = "Sinusrhythmus. Kein Vorhofflimmern. V.a. LSB. "
    lexicon.extract(sentence * 10)  # warm the folding caches
    # Doubling the report must about double the work (a quadratic step would quadruple it).
    small, large = (_python_calls(lexicon.extract, sentence * n) for n in (500, 1000))
    assert 1.8 < large / small < 2.2, (small, large)
    text = sentence * 20000  # about 1 MB
    entities = lexicon.extract(text)
    # Identical mentions are reported once per (span, concept, status).
    assert {(e["concept"], e["status"]) for e in entities} == {
        ("sinus rhythm", "present"), ("atrial fibrillation", "absent"), ("left bundle branch block", "uncertain")}


def test_non_utf8_and_broken_unicode_reports():
    latin1 = "Vorhofflimmern, überdrehter Linkstyp".encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        latin1.decode("utf-8")
    result = extract_entities(latin1)
    assert {e["concept"] for e in result.entities} == {"atrial fibrillation", "left axis deviation"}
    assert decode_report(latin1)[0] == "Vorhofflimmern, überdrehter Linkstyp"
    # Invalid in every Windows code page position: falls back to Latin-1 without failing.
    junk = b"\x81\x8d Sinusrhythmus \xff"
    assert extract_entities(junk).concepts() == ["sinus rhythm"]
    # A str holding lone surrogates (surrogateescape-decoded bytes) hashes as the original bytes.
    escaped = b"Sinusrhythmus \xe4".decode("utf-8", "surrogateescape")
    assert report_sha256(escaped) == report_sha256(b"Sinusrhythmus \xe4")
    assert extract_entities(escaped).concepts() == ["sinus rhythm"]


def test_ptbxl_mojibake_forms(lexicon):
    # PTB-XL writes some umlauts as upper-case letters inside lower-case words or as '#'.
    assert found(lexicon, "unvollstÄndiger rechtsschenkelblock") == {"incomplete right bundle branch block": "present"}
    assert found(lexicon, "mÄssige amplitudenkriterien f#r linkshypertrophie") == {
        "voltage criteria for left ventricular hypertrophy": "present"}


def test_extract_entities_batch_keeps_order_and_dedupes():
    reports = ["Vorhofflimmern", "Sinusrhythmus", "Vorhofflimmern", b"Sinusrhythmus"]
    results = extract_entities(reports)
    assert [r.concepts() for r in results] == [["atrial fibrillation"], ["sinus rhythm"], ["atrial fibrillation"], ["sinus rhythm"]]
    results[0].entities.append({"span": "x", "concept": "y", "status": "present"})
    assert len(results[2].entities) == 1  # results of identical reports are independent copies
    with pytest.raises(ValueError, match="unknown extraction backend 'spacy'"):
        extract_entities("x", backend="spacy")
    with pytest.raises(TypeError, match="lexicon backend takes no"):
        extract_entities("x", backend="lexicon", model="m")


def test_ptbxl_quality_meets_target(ptbxl_dir):
    spec = importlib.util.spec_from_file_location("lexicon_quality_ptbxl", REPO / "benchmarks" / "lexicon_quality_ptbxl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--ptbxl_dir", str(ptbxl_dir)])
    assert result["micro_f1"] >= 0.80, result


@pytest.mark.parametrize("text, concept", [
    # PTB-XL's Swedish "age undetermined" after an infarct; the ST depression that follows is stated
    ("sinusrytm inferior infarkt ålder ej bestämmbar st-t sänkning, såsom vid lateral ischemi", "ST depression"),
    ("lagetyp nicht bestimmbar rechtsschenkelblock", "right bundle branch block"),
    ("axis not determinable left bundle branch block", "left bundle branch block"),
])
def test_cannot_be_determined_phrase_negates_nothing(lexicon, text, concept):
    # The "ej"/"nicht"/"not" of these phrases qualifies a determination; before they were read whole, it
    # negated the next finding within the cue window.
    assert found(lexicon, text)[concept] == "present"


def test_negation_still_reaches_past_a_cannot_be_determined_phrase(lexicon):
    assert found(lexicon, "lagetyp nicht bestimmbar. kein rechtsschenkelblock")["right bundle branch block"] == "absent"
