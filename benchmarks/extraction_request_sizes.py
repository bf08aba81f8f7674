"""Size of one LLM entity-extraction request and answer, the measured input of the extraction estimate in
docs/pretraining_recipe.md.

For the reports of a corpus (default: the synthetic corpus, whose English machine-style statements resemble
MIMIC-IV-ECG's; ``--dataset ptbxl --data_dir ../shared/data/ptbxl`` for real PTB-XL reports) it prints the
characters of the shared prompt prefix (system prompt with the vocabulary's names, the worked example), of
the per-report user message, and of the answer the LLM backend asks for, written here from the lexicon's
entities of the same report in the backend's JSON schema. Tokens are estimated as characters / 4 (a common
rule of thumb for English text with byte-pair tokenizers; the exact figure depends on the LLM's tokenizer).

    python benchmarks/extraction_request_sizes.py [--dataset synthetic] [--num_records 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics

from datasets_scripts.reports import iter_reports
from processing.concepts.vocabulary import load_concept_vocabulary
from processing.reports.lexicon import LexiconExtractor
from processing.reports.llm import build_messages


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--num_records", type=int, default=2000, help="synthetic: number of reports")
    args = parser.parse_args()
    kwargs = {"num_records": args.num_records, "seed": 0} if args.dataset == "synthetic" else {}
    reports = [text for _, text in iter_reports(args.dataset, args.data_dir, **kwargs)]
    vocab = load_concept_vocabulary()
    extractor = LexiconExtractor(vocab)
    prefix = build_messages("", vocab)[:-1]
    prefix_chars = sum(len(m["content"]) for m in prefix)
    user_chars, answer_chars, distinct = [], [], len(set(reports))
    for text in reports:
        user_chars.append(len(build_messages(text, vocab)[-1]["content"]))
        entities = [{"span": e["span"], "concept": e["concept"], "status": e["status"]} for e in extractor.extract(text)]
        answer_chars.append(len(json.dumps({"entities": entities}, ensure_ascii=False)))
    print(f"{args.dataset}: {len(reports)} reports ({distinct} distinct texts, {distinct / len(reports):.0%})")
    print(f"shared prefix (system prompt + example, cached by servers with prefix caching): {prefix_chars} chars "
          f"~ {prefix_chars / 4:.0f} tokens")
    for name, values in (("user message (the report)", user_chars), ("answer (lexicon entities as JSON)", answer_chars)):
        print(f"{name}: median {statistics.median(values):.0f} chars ~ {statistics.median(values) / 4:.0f} tokens, "
              f"mean {statistics.mean(values):.0f} chars ~ {statistics.mean(values) / 4:.0f} tokens")


if __name__ == "__main__":
    main()
