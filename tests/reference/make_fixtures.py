#!/usr/bin/env python3
"""Reference fixtures from Hugging Face transformers for deltaserve's model tests.

Builds three tiny random models (Qwen3.5 dense, Qwen3.5 MoE, Qwen3-Next), perturbs every parameter
so nothing sits at its default (norm weights, A_log and dt_bias included), rounds them to BF16 and
saves each as a checkpoint exactly as `save_pretrained` writes it. Then records, in fp32 on the CPU
(no TF32, no fused kernels):
  prompt{p}.input_ids       I32 [T]
  prompt{p}.prefill_logits  F32 [T, V]   logits at every prompt position
  prompt{p}.greedy_tokens   I32 [N]      greedy continuation
  prompt{p}.greedy_logits   F32 [N, V]   row k produced greedy_tokens[k]
into <out>/<name>/reference.safetensors. Run on the GPU host (transformers 5.17):
  HF_HUB_OFFLINE=1 python3 tests/reference/make_fixtures.py --out tests/data
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file
import transformers

PROMPT_LENGTHS = (7, 16, 29)
GREEDY_STEPS = 32
VOCAB = 512

# Small but real shapes: dk = dv = 128 and head_dim 256 as in the published models; key heads
# divisible by 4 so TP 1/2/4 all apply; 2 KV heads so TP 4 exercises KV replication.
COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=256, linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
    linear_num_key_heads=4, rms_norm_eps=1e-6, max_position_embeddings=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
    eos_token_id=VOCAB - 1, pad_token_id=None, bos_token_id=None,
)

FIXTURES = {
    "qwen3_5_dense": ("Qwen3_5TextConfig", "Qwen3_5ForCausalLM",
                      dict(linear_num_value_heads=8, intermediate_size=128, tie_word_embeddings=True)),
    "qwen3_5_moe": ("Qwen3_5MoeTextConfig", "Qwen3_5MoeForCausalLM",
                    dict(linear_num_value_heads=4, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                         shared_expert_intermediate_size=48, tie_word_embeddings=False)),
    "qwen3_next": ("Qwen3NextConfig", "Qwen3NextForCausalLM",
                   dict(linear_num_value_heads=8, intermediate_size=128, num_experts=8, num_experts_per_tok=2,
                        moe_intermediate_size=32, shared_expert_intermediate_size=48, decoder_sparse_step=1,
                        norm_topk_prob=True, mlp_only_layers=[], tie_word_embeddings=False)),
}


def perturb(model, gen):
    """Move every parameter away from its initial value, at a scale that keeps activations O(1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("A_log") or name.endswith("dt_bias"):
                p.add_(0.3 * noise)
            elif "norm" in name:
                p.add_(0.2 * noise)
            elif "conv1d" in name:
                p.copy_(0.3 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            elif p.dim() >= 2:
                p.copy_(noise / math.sqrt(p.shape[-1]))
            else:
                p.add_(0.1 * noise)
            p.copy_(p.bfloat16().float())  # exactly representable in the BF16 checkpoint


@torch.no_grad()
def record(model, gen):
    tensors = {}
    for p, length in enumerate(PROMPT_LENGTHS):
        ids = torch.randint(0, VOCAB - 1, (1, length), generator=gen)
        tensors[f"prompt{p}.input_ids"] = ids[0].to(torch.int32)
        tensors[f"prompt{p}.prefill_logits"] = model(ids).logits[0].float().contiguous()
        seq, tokens, rows = ids, [], []
        for _ in range(GREEDY_STEPS):
            logits = model(seq).logits[0, -1].float()  # full recompute: no cache code involved
            top2 = torch.topk(logits, 2).values
            if float(top2[0] - top2[1]) < 1e-3:
                print(f"  warning: near tie in prompt {p} step {len(tokens)}: margin {float(top2[0] - top2[1]):.2e}")
            token = int(torch.argmax(logits))
            tokens.append(token)
            rows.append(logits)
            seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
        tensors[f"prompt{p}.greedy_tokens"] = torch.tensor(tokens, dtype=torch.int32)
        tensors[f"prompt{p}.greedy_logits"] = torch.stack(rows).contiguous()
    return tensors


def make(name, config_cls, model_cls, extra, out_dir, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = getattr(transformers, config_cls)(**COMMON, **extra)
    model = getattr(transformers, model_cls)(config).float().eval()
    model.config._attn_implementation = "eager"
    perturb(model, gen)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    model.float()
    save_file(record(model, gen), os.path.join(folder, "reference.safetensors"))
    with open(os.path.join(folder, "config.json")) as f:
        print(f"{name}: {json.load(f)['model_type']}, saved to {folder}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tests/data")
    parser.add_argument("--only", nargs="*", default=list(FIXTURES))
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(max(1, os.cpu_count() // 2))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for i, name in enumerate(args.only):
        make(name, *FIXTURES[name], args.out, args.seed + i)


if __name__ == "__main__":
    main()
