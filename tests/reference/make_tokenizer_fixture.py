#!/usr/bin/env python3
"""Writes the reference token ids of the tokenizer corpus with Hugging Face `tokenizers`.

The C++ tokenizer (server/tokenizer/) must reproduce these ids exactly; the unit test
server_tokenizer_reference_test compares against the output file.

    pip install tokenizers
    python3 tests/reference/make_tokenizer_fixture.py \
        --tokenizer data/tokenizer/qwen3/tokenizer.json \
        --corpus tests/data/tokenizer/corpus.jsonl \
        --out tests/data/tokenizer/reference_ids.jsonl

Output: one JSON object per line. The first line is {"meta": {...}} (library version, sha256 of
tokenizer.json); then, for each corpus entry in order, {"id", "ids", "decoded"} where ids come
from encode(text, add_special_tokens=False) and decoded from decode(ids,
skip_special_tokens=False).
"""
import argparse
import hashlib
import json

import tokenizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="path of tokenizer.json")
    parser.add_argument("--corpus", required=True, help="JSONL with {'id', 'text'} per line")
    parser.add_argument("--out", required=True, help="JSONL to write")
    args = parser.parse_args()

    with open(args.tokenizer, "rb") as f:
        tokenizer_sha256 = hashlib.sha256(f.read()).hexdigest()
    tokenizer = tokenizers.Tokenizer.from_file(args.tokenizer)

    with open(args.corpus, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]

    with open(args.out, "w", encoding="utf-8") as out:
        meta = {"tokenizers_version": tokenizers.__version__, "tokenizer_sha256": tokenizer_sha256,
                "corpus_entries": len(entries)}
        out.write(json.dumps({"meta": meta}) + "\n")
        for entry in entries:
            ids = tokenizer.encode(entry["text"], add_special_tokens=False).ids
            decoded = tokenizer.decode(ids, skip_special_tokens=False)
            out.write(json.dumps({"id": entry["id"], "ids": ids, "decoded": decoded}, ensure_ascii=False) + "\n")
    print(f"wrote {len(entries)} entries to {args.out} (tokenizers {tokenizers.__version__})")


if __name__ == "__main__":
    main()
