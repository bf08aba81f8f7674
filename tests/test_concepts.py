"""The cardiac concept vocabulary: coverage of every downstream label set, uniqueness, lookups, errors."""

import ast
import csv
import json

import pytest

from processing import Concept, ConceptVocabulary, load_concept_vocabulary
from processing.concepts.vocabulary import DEFAULT_VOCABULARY_PATH, vocabulary_from_dict
from processing.concepts.text_folding import phrase_keys

CPSC2018_CLASSES = ("Normal", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")


@pytest.fixture(scope="module")
def vocab() -> ConceptVocabulary:
    return load_concept_vocabulary()


@pytest.fixture(scope="module")
def scp_rows(ptbxl_dir):
    with open(ptbxl_dir / "scp_statements.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["code"] = row[""]
    return rows


def _snomed_rows(snomed_dir):
    rows = []
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        with open(snomed_dir / name, newline="", encoding="utf-8") as handle:
            rows += [(name, r["Dx"], r["SNOMEDCTCode"], r["Abbreviation"]) for r in csv.DictReader(handle)]
    return rows


def test_file_has_version_and_concepts():
    data = json.loads(DEFAULT_VOCABULARY_PATH.read_text(encoding="utf-8"))
    assert isinstance(data["version"], str) and data["version"]
    assert isinstance(data["concepts"], list) and len(data["concepts"]) >= 150


def test_every_scp_statement_is_a_concept(vocab, scp_rows):
    assert len(scp_rows) == 71
    missing = [r["code"] for r in scp_rows if vocab.by_scp_code(r["code"]) is None]
    assert missing == []
    # One concept per statement: no two statements share a concept.
    names = [vocab.by_scp_code(r["code"]).name for r in scp_rows]
    assert len(set(names)) == 71


def test_scp_statement_groups(vocab, scp_rows):
    form = [r["code"] for r in scp_rows if r["form"] == "1.0"]
    rhythm = [r["code"] for r in scp_rows if r["rhythm"] == "1.0"]
    assert len(form) == 19 and len(rhythm) == 12
    for code in rhythm:
        assert vocab.by_scp_code(code).category == "rhythm", code
    for row in scp_rows:
        concept = vocab.by_scp_code(row["code"])
        expected = "rhythm" if row["rhythm"] == "1.0" else "diagnostic" if row["diagnostic"] == "1.0" else "form"
        assert concept.category == expected, (row["code"], concept.category)


def test_every_ptbxl_superclass_and_subclass_is_a_concept(vocab, scp_rows):
    superclasses = {r["diagnostic_class"] for r in scp_rows if r["diagnostic_class"]}
    subclasses = {r["diagnostic_subclass"] for r in scp_rows if r["diagnostic_subclass"]}
    assert superclasses == {"NORM", "MI", "STTC", "CD", "HYP"}
    assert len(subclasses) == 23
    for code in superclasses | subclasses:
        concept = vocab.by_ptbxl_class(code)
        assert concept is not None, code
        assert concept.ptbxl_class == code
    # Subclasses that are also SCP statement codes name the same concept as the statement.
    for code in subclasses:
        if vocab.by_scp_code(code) is not None:
            assert vocab.by_scp_code(code) is vocab.by_ptbxl_class(code), code


def test_every_challenge_snomed_code_is_a_concept(vocab, snomed_dir):
    rows = _snomed_rows(snomed_dir)
    assert len(rows) > 100
    missing = [(f, dx, code) for f, dx, code, _ in rows if vocab.by_snomed_code(code) is None]
    assert missing == []
    assert vocab.by_snomed_code(int(rows[0][2])) is vocab.by_snomed_code(rows[0][2])


@pytest.mark.parametrize(
    "a, b", [("713427006", "59118001"), ("284470004", "63593006"), ("427172004", "17338001"), ("733534002", "164909002")]
)
def test_challenge_equivalent_codes_share_a_concept(vocab, a, b):
    assert vocab.by_snomed_code(a) is vocab.by_snomed_code(b) is not None


@pytest.mark.parametrize(
    "scp, snomed",
    [("AFIB", "164889003"), ("1AVB", "270492004"), ("CRBBB", "59118001"), ("CLBBB", "164909002"), ("SR", "426783006"),
     ("PAC", "284470004"), ("PVC", "427172004"), ("STD_", "429622005"), ("STE_", "164931005"), ("LVH", "164873001"),
     ("IRBBB", "713426002"), ("LAFB", "445118002"), ("LNGQT", "111975006")],
)
def test_scp_and_snomed_of_the_same_finding_are_one_concept(vocab, scp, snomed):
    assert vocab.by_scp_code(scp) is vocab.by_snomed_code(snomed)


def test_cpsc2018_classes_resolve(vocab):
    expected = {"Normal": "NORM", "AF": "AFIB", "I-AVB": "1AVB", "LBBB": "CLBBB", "RBBB": "CRBBB",
                "PAC": "PAC", "PVC": "PVC", "STD": "STD_", "STE": "STE_"}
    for label in CPSC2018_CLASSES:
        concept = vocab.lookup(label)
        assert concept is not None, label
        assert concept.scp_code == expected[label], (label, concept.name)


def test_fields_are_well_formed(vocab):
    for concept in vocab:
        assert isinstance(concept, Concept)
        assert concept.category in ("rhythm", "form", "diagnostic")
        assert concept.name == concept.name.strip() and concept.name
        # One sentence of our own: ends with a full stop, no second sentence.
        assert concept.description.endswith("."), concept.name
        assert ". " not in concept.description.rstrip("."), concept.name
        assert 20 <= len(concept.description) <= 200, concept.name
        assert isinstance(concept.synonyms, tuple) and isinstance(concept.snomed_equivalents, tuple)
        for code in concept.snomed_codes:
            assert code.isdigit(), (concept.name, code)


def test_names_unique_and_no_synonym_maps_to_two_concepts(vocab):
    assert len(set(vocab.names)) == len(vocab)
    owner = {}
    for concept in vocab:
        for text in concept.texts:
            for key in set(phrase_keys(text)):
                assert owner.setdefault(key, concept.name) == concept.name, (text, concept.name, owner[key])


@pytest.mark.parametrize(
    "text, name",
    [("AV-Block I", "first degree AV block"), ("LSB", "left bundle branch block"), ("RSB", "right bundle branch block"),
     ("LVH", "left ventricular hypertrophy"), ("SR", "sinus rhythm"), ("VES", "premature ventricular contraction"),
     ("SVES", "premature atrial contraction"), ("VHF", "atrial fibrillation"), ("Vorhofflimmern", "atrial fibrillation"),
     ("Sinus-Rhythmus", "sinus rhythm"), ("sinus rhythmus", "sinus rhythm"), ("Linksschenkelblock", "left bundle branch block"),
     ("unvollständiger Rechtsschenkelblock", "incomplete right bundle branch block"),
     ("unvollstaendigen rechtsschenkelblocks", "incomplete right bundle branch block"),
     ("Vorhofsüberlastung links", "left atrial enlargement"), ("ueberdrehter Linkstyp", "left axis deviation"),
     ("förmaksflimmer", "atrial fibrillation"), ("vänster kammarhypertrofi", "left ventricular hypertrophy"),
     ("ischaemia", "myocardial ischemia"), ("ST-Senkung", "ST depression"), ("QT-Verlängerung", "prolonged QT interval"),
     ("atrial fibrillation", "atrial fibrillation"), ("ATRIAL FIBRILLATION", "atrial fibrillation")],
)
def test_lookup_normalises(vocab, text, name):
    concept = vocab.lookup(text)
    assert concept is not None and concept.name == name, (text, concept)


def test_lookup_misses_and_get_errors(vocab):
    assert vocab.lookup("") is None
    assert vocab.lookup("   ") is None
    assert vocab.lookup("banana split") is None
    assert vocab.lookup("sinus") is None  # a prefix is not a match
    assert "atrial fibrillation" in vocab and "banana" not in vocab and 3 not in vocab
    with pytest.raises(KeyError, match="banana"):
        vocab.get("banana")
    assert vocab.get("atrial fibrillation").scp_code == "AFIB"
    assert vocab.by_scp_code("afib") is vocab.get("atrial fibrillation")
    assert vocab.by_scp_code("NOPE") is None and vocab.by_snomed_code(1) is None and vocab.by_ptbxl_class("X") is None


def test_loader_is_cached_and_immutable(vocab):
    assert load_concept_vocabulary() is vocab
    assert load_concept_vocabulary(DEFAULT_VOCABULARY_PATH) is vocab
    concept = vocab.get("sinus rhythm")
    with pytest.raises(AttributeError):
        concept.name = "x"
    names = vocab.names
    names.append("x")
    assert "x" not in vocab.names


def _entry(name, **kw):
    base = {"name": name, "synonyms": [], "category": "form", "description": "A test concept used only here."}
    base.update(kw)
    return base


def test_invalid_vocabularies_are_refused_with_clear_messages(tmp_path):
    with pytest.raises(ValueError, match="synonym clash.*'AF' of 'b'.*'A-F' of 'a'"):
        vocabulary_from_dict({"version": "t", "concepts": [_entry("a", synonyms=["A-F"]), _entry("b", synonyms=["AF"])]})
    with pytest.raises(ValueError, match="name 'a'"):
        vocabulary_from_dict({"version": "t", "concepts": [_entry("a"), _entry("a")]})
    with pytest.raises(ValueError, match="SNOMED code '1'"):
        vocabulary_from_dict({"version": "t", "concepts": [_entry("a", snomed_code="1"), _entry("b", snomed_equivalents=["1"])]})
    with pytest.raises(ValueError, match="category"):
        vocabulary_from_dict({"version": "t", "concepts": [_entry("a", category="other")]})
    with pytest.raises(ValueError, match=r"concept #0.*description"):
        vocabulary_from_dict({"version": "t", "concepts": [{"name": "a", "synonyms": [], "category": "form"}]})
    with pytest.raises(ValueError, match="version"):
        vocabulary_from_dict({"concepts": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        load_concept_vocabulary(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_concept_vocabulary(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"version": "9", "concepts": [_entry("alpha", synonyms=["Alpha-Befund"])]}), encoding="utf-8")
    loaded = load_concept_vocabulary(good)
    assert loaded.version == "9" and loaded.lookup("alpha befund").name == "alpha"


def test_ptbxl_scp_codes_of_the_real_records_all_resolve(vocab, ptbxl_dir):
    with open(ptbxl_dir / "ptbxl_database.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for code in ast.literal_eval(row["scp_codes"]):
                assert vocab.by_scp_code(code) is not None, (row["ecg_id"], code)


def test_snomed_codes_of_the_real_challenge_records_all_resolve(vocab, cinc2021_dir):
    with open(cinc2021_dir / "labels.csv", newline="", encoding="utf-8") as handle:
        codes = {code for row in csv.DictReader(handle) for code in row["dx_snomed"].split(",") if code}
    assert len(codes) > 20
    assert [c for c in codes if vocab.by_snomed_code(c) is None] == []
