"""Tiny random-weight Llama models built by the tests (no downloads).

tiny_models(vocab) -> (draft, target, unrelated): the target is the draft plus two layers whose
outputs are zeroed, so it computes exactly what the draft computes (100% greedy acceptance); the
unrelated model has its own random weights (~0% acceptance).  head_dim 16 suits the reference
engine; vLLM's CPU attention needs head_dim >= 32 (hidden 128, 4 heads).
"""

from __future__ import annotations

from pathlib import Path


def tiny_config(vocab: int, layers: int, hidden: int = 64, head_dim: int = 16):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // head_dim,
        num_key_value_heads=max(1, hidden // head_dim // 2),
        head_dim=head_dim,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def tiny_models(vocab: int, seed: int = 0, sharpen: float = 1.0, hidden: int = 64, head_dim: int = 16):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    draft = LlamaForCausalLM(tiny_config(vocab, 2, hidden, head_dim)).eval()
    if sharpen != 1.0:
        with torch.no_grad():
            draft.lm_head.weight.mul_(sharpen)
    target = LlamaForCausalLM(tiny_config(vocab, 4, hidden, head_dim)).eval()
    sd = target.state_dict()
    sd.update({k: v.clone() for k, v in draft.state_dict().items()})
    for i in (2, 3):
        sd[f"model.layers.{i}.self_attn.o_proj.weight"].zero_()
        sd[f"model.layers.{i}.mlp.down_proj.weight"].zero_()
    target.load_state_dict(sd)
    unrelated = LlamaForCausalLM(tiny_config(vocab, 2, hidden, head_dim)).eval()
    if sharpen != 1.0:
        with torch.no_grad():
            unrelated.lm_head.weight.mul_(sharpen)
    return draft, target, unrelated


def save_trio(root: Path, tokenizer_dir: Path, seed: int = 1, **kw) -> dict[str, str]:
    """Save (draft, target, unrelated) as HF folders with SmolLM2's tokenizer; returns their paths."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    draft, target, unrelated = tiny_models(len(tok), seed=seed, **kw)
    out = {}
    for name, model in (("draft", draft), ("target", target), ("unrelated", unrelated)):
        d = root / name
        model.save_pretrained(str(d))
        tok.save_pretrained(str(d))
        out[name] = str(d)
    return out
