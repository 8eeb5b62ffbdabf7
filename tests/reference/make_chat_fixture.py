#!/usr/bin/env python3
"""Renders the chat-template test cases with the real Jinja chat_template of tokenizer_config.json.

The C++ formatter (server/tokenizer/chat_format.cpp) must reproduce every `expected` string
byte for byte; the unit test server_chat_format_test compares against the output file. The
Jinja environment matches transformers' apply_chat_template (trim_blocks, lstrip_blocks,
loopcontrols, tojson = json.dumps(ensure_ascii=False)).

    pip install jinja2
    python3 tests/reference/make_chat_fixture.py \
        --config data/tokenizer/qwen3/tokenizer_config.json \
        --cases tests/data/tokenizer/chat_cases.json \
        --out tests/data/tokenizer/chat_expected.jsonl

Input: a JSON list of cases {name, messages, tools?, add_generation_prompt, enable_thinking?}.
Output: one line per case, the case with its rendered `expected` text added.
"""
import argparse
import json

import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path of tokenizer_config.json")
    parser.add_argument("--cases", required=True, help="JSON list of chat cases")
    parser.add_argument("--out", required=True, help="JSONL to write")
    args = parser.parse_args()

    with open(args.config, encoding="utf-8") as f:
        chat_template = json.load(f)["chat_template"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    template = env.from_string(chat_template)

    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)
    with open(args.out, "w", encoding="utf-8") as out:
        for case in cases:
            variables = {"messages": case["messages"], "add_generation_prompt": case["add_generation_prompt"]}
            for optional in ("tools", "enable_thinking"):
                if optional in case:
                    variables[optional] = case[optional]
            out.write(json.dumps({**case, "expected": template.render(**variables)}, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
