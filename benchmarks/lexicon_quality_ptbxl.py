"""Quality of the lexicon extractor on real PTB-XL reports, against the cardiologists' SCP codes.

For every record of ``ptbxl_database.csv`` the report is run through the lexicon backend; the SCP code
of each extracted concept with status *present* or *uncertain* is a predicted statement. The reference
is the record's ``scp_codes``: a code counts as positive whatever its likelihood (PTB-XL gives rhythm
and form statements likelihood 0 and marks uncertain diagnoses with 15-50, and uncertain extractions
are counted as positive for the same reason). Absent (negated) extractions predict nothing.

Scored statements (the primary number): the SCP statements that occur in the reference of at least
one of the evaluated records. Predictions of other statements are listed separately.

PTB-XL reports sometimes end with an annotator's note ("Edit: INJIN, IRBBB, ...") that names SCP
codes; that note is label metadata, not report text, and is removed before extraction (``--keep-edit``
keeps it).

Super classes (the pre-training targets' signal): a record is a true positive of a PTB-XL diagnostic
super class (NORM, MI, STTC, HYP, CD) when one of its ``scp_codes`` is a diagnostic statement of that
class in ``scp_statements.csv`` (any likelihood, as the ``super`` label set of the dataset builder); the
lexicon finds it when a present or uncertain concept is that class's concept or has it among its is-a
ancestors (``processing/concepts/concept_ancestors.json``), the path pre-training targets take.

``--folds 1-8`` restricts everything to those ``strat_fold`` values (develop on 1-8; 9-10 are the test
folds and are read once). ``--show-super-misses CLASS`` prints the reports of that class's missed records
and false positives.

Run: ``python benchmarks/lexicon_quality_ptbxl.py [--ptbxl_dir DIR] [--folds 1-8] [--show-errors N]
[--show-super-misses MI]``
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from processing.concepts.vocabulary import load_concept_vocabulary
from processing.reports.lexicon import LexiconExtractor

EDIT_NOTE = re.compile(r"\bedit:.*$", re.IGNORECASE | re.DOTALL)


def default_ptbxl_dir() -> Path:
    shared = Path(os.environ.get("SUPREME_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared / "ptbxl"


SUPER_CLASSES = ("NORM", "MI", "STTC", "HYP", "CD")


def parse_folds(text):
    """'1-8' / '9,10' / '' -> a set of fold numbers (None: every fold)."""
    if not text:
        return None
    folds = set()
    for part in text.split(","):
        try:
            low, _, high = part.partition("-")
            folds.update(range(int(low), int(high or low) + 1))
        except ValueError:
            raise SystemExit(f"--folds: expected e.g. '1-8' or '9,10', got {text!r}")
    return folds


def load_records(ptbxl_dir: Path, keep_edit: bool, folds=None):
    path = ptbxl_dir / "ptbxl_database.csv"
    if not path.is_file():
        raise SystemExit(f"PTB-XL metadata not found: {path} (pass --ptbxl_dir or set SUPREME_SHARED_DATA)")
    records = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if folds is not None and int(row["strat_fold"]) not in folds:
                continue
            report = row["report"] or ""
            if not keep_edit:
                report = EDIT_NOTE.sub("", report)
            records.append((row["ecg_id"], report, set(ast.literal_eval(row["scp_codes"]))))
    return records


def evaluate(records, extractor, vocab):
    predictions = []
    for record_id, report, gold in records:
        predicted = set()
        for entity in extractor.extract(report):
            if entity["status"] == "absent":
                continue
            code = vocab.get(entity["concept"]).scp_code
            if code:
                predicted.add(code)
        predictions.append((record_id, report, gold, predicted))
    return predictions


def statement_classes(ptbxl_dir: Path) -> dict:
    """SCP code -> diagnostic super class, for the diagnostic statements of ``scp_statements.csv``."""
    path = ptbxl_dir / "scp_statements.csv"
    if not path.is_file():
        raise SystemExit(f"PTB-XL statement table not found: {path}")
    table = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            code = row.get("") or row.get("Unnamed: 0")
            klass = (row.get("diagnostic_class") or "").strip()
            if code and klass and (row.get("diagnostic") or "").strip() in ("1", "1.0"):
                table[code] = klass
    return table


def super_class_scores(records, extractor, vocab, classes: dict, show=None):
    """Per super class: (true positives found, true, predicted) over the records; prints misses of ``show``."""
    from processing.concepts.ontology import load_concept_ancestors

    ancestors = load_concept_ancestors()
    concept_class = {}
    for concept in vocab:
        reached = {concept.name, *ancestors.get(concept.name, ())}
        concept_class[concept.name] = {vocab.get(n).ptbxl_class for n in reached} & set(SUPER_CLASSES)
    counts = {c: Counter() for c in SUPER_CLASSES}
    for record_id, report, gold in records:
        true = {classes[code] for code in gold if code in classes}
        entities = extractor.extract(report)
        found = set()
        for entity in entities:
            if entity["status"] != "absent":
                found |= concept_class[entity["concept"]]
        for c in SUPER_CLASSES:
            counts[c]["tp"] += c in true and c in found
            counts[c]["true"] += c in true
            counts[c]["predicted"] += c in found
        if show and (show in true) != (show in found):
            kind = "MISSED" if show in true else "EXTRA"
            print(f"{kind} #{record_id} codes {sorted(gold)}\n   {report}\n   -> "
                  + "; ".join(f"{e['concept']}[{e['status'][0]}]" for e in entities))
    return counts


def scores(predictions, scored_codes):
    tp, fp, fn = Counter(), Counter(), Counter()
    for _, _, gold, predicted in predictions:
        for code in scored_codes:
            g, p = code in gold, code in predicted
            tp[code] += g and p
            fp[code] += p and not g
            fn[code] += g and not p
    return tp, fp, fn


def f1(tp, fp, fn):
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptbxl_dir", type=Path, default=default_ptbxl_dir())
    parser.add_argument("--keep-edit", action="store_true", help="do not strip the annotators' 'Edit:' notes")
    parser.add_argument("--show-errors", type=int, default=0, metavar="N", help="print N records with errors")
    parser.add_argument("--folds", default="", help="only these strat_fold values, e.g. 1-8 (default: all)")
    parser.add_argument("--show-super-misses", default=None, choices=SUPER_CLASSES, metavar="CLASS",
                        help="print the reports of this super class's missed records and false positives")
    args = parser.parse_args(argv)

    vocab = load_concept_vocabulary()
    extractor = LexiconExtractor(vocab)
    records = load_records(args.ptbxl_dir, args.keep_edit, parse_folds(args.folds))
    if not records:
        raise SystemExit(f"no PTB-XL records in folds {args.folds!r}")
    predictions = evaluate(records, extractor, vocab)
    scored = sorted({code for _, _, gold, _ in predictions for code in gold})
    tp, fp, fn = scores(predictions, scored)

    print(f"PTB-XL records: {len(records)}   scored SCP statements: {len(scored)}   vocabulary {vocab.version}")
    print(f"{'code':8s} {'concept':48s} {'support':>7s} {'tp':>4s} {'fp':>4s} {'fn':>4s} {'prec':>6s} {'recall':>6s} {'f1':>6s}")
    rows = []
    for code in scored:
        p, r, f = f1(tp[code], fp[code], fn[code])
        rows.append((code, tp[code] + fn[code], p, r, f))
        print(f"{code:8s} {vocab.by_scp_code(code).name[:48]:48s} {tp[code] + fn[code]:7d} {tp[code]:4d} {fp[code]:4d} "
              f"{fn[code]:4d} {p:6.3f} {r:6.3f} {f:6.3f}")
    micro_p, micro_r, micro_f = f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    macro_f = sum(r[4] for r in rows) / len(rows)
    print(f"\nmicro precision {micro_p:.3f}  micro recall {micro_r:.3f}  micro-F1 {micro_f:.3f}   macro-F1 {macro_f:.3f}")

    rest = [c for c in scored if c not in ("SR", "NORM")]
    _, _, rest_f = f1(sum(tp[c] for c in rest), sum(fp[c] for c in rest), sum(fn[c] for c in rest))
    print(f"micro-F1 without SR and NORM (which carry {tp['SR'] + fn['SR'] + tp['NORM'] + fn['NORM']} of "
          f"{sum(tp.values()) + sum(fn.values())} reference labels): {rest_f:.3f}")

    outside = Counter(code for _, _, gold, predicted in predictions for code in predicted if code not in scored)
    if outside:
        print("predicted statements that no evaluated record carries (false positives outside the scored set): "
              + ", ".join(f"{c} x{n}" for c, n in outside.most_common()))
        all_fp = sum(fp.values()) + sum(outside.values())
        _, _, f_all = f1(sum(tp.values()), all_fp, sum(fn.values()))
        print(f"micro-F1 counting those too: {f_all:.3f}")

    # Gap: reference statements of records whose report names no finding at all.
    silent = [(rid, rep) for rid, rep, gold, _ in predictions if not extractor.extract(rep)]
    silent_labels = sum(len(gold) for rid, rep, gold, _ in predictions if not extractor.extract(rep))
    print(f"records whose text yields no concept: {len(silent)} ({silent_labels} reference statements), e.g. "
          + "; ".join(repr(rep[:40]) for _, rep in silent[:3]))
    weakest = sorted((r for r in rows if r[1] >= 3), key=lambda r: r[4])[:6]
    print("weakest statements (support >= 3): " + ", ".join(f"{c} F1={f:.2f} (n={n})" for c, n, _, _, f in weakest))

    counts = super_class_scores(records, extractor, vocab, statement_classes(args.ptbxl_dir), args.show_super_misses)
    print(f"\nsuper classes (folds {args.folds or 'all'}): found of true, precision, recall")
    print(f"{'class':6s} {'found':>5s} {'true':>5s} {'pred':>5s} {'prec':>6s} {'recall':>6s} {'f1':>6s}")
    super_rows = {}
    for c in SUPER_CLASSES:
        k = counts[c]
        p, r, f = f1(k["tp"], k["predicted"] - k["tp"], k["true"] - k["tp"])
        super_rows[c] = {"found": k["tp"], "true": k["true"], "predicted": k["predicted"], "precision": p, "recall": r}
        print(f"{c:6s} {k['tp']:5d} {k['true']:5d} {k['predicted']:5d} {p:6.3f} {r:6.3f} {f:6.3f}")

    if args.show_errors:
        shown = 0
        for record_id, report, gold, predicted in predictions:
            missed, extra = (gold - predicted), (predicted - gold)
            if missed or extra:
                print(f"\n#{record_id}: {report}\n   missed {sorted(missed)}  extra {sorted(extra)}")
                shown += 1
                if shown >= args.show_errors:
                    break
    return {"micro_f1": micro_f, "micro_precision": micro_p, "micro_recall": micro_r, "macro_f1": macro_f,
            "micro_f1_without_sr_norm": rest_f, "super": super_rows}


if __name__ == "__main__":
    main()
