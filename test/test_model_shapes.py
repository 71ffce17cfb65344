"""The Qwen3-VL shape table (random-weight models, roofline): checked against the published sizes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vln_ros.core.model_shapes import GPUS, SHAPES, image_tokens, roofline

ROOT = Path(__file__).resolve().parents[1]

# Parameter counts on the models' Hugging Face pages (billions).
PUBLISHED_B = {'2b': 2.13, '4b': 4.44, '8b': 8.77, '32b': 33.4, '30b-a3b': 31.1}


@pytest.mark.parametrize('name', sorted(SHAPES))
def test_shapes_have_the_published_parameter_counts(name):
    assert SHAPES[name].params() / 1e9 == pytest.approx(PUBLISHED_B[name], rel=0.01)


def test_moe_activates_about_3b_parameters():
    moe = SHAPES['30b-a3b']
    assert 3.0e9 < moe.text_params(active=True) < 3.6e9 < moe.text_params()


def test_roofline_matches_the_measured_orders_of_magnitude():
    # shared/GPU.md: decode is memory bound at about 5 ms/token (8B, H100) and 7 ms/token (32B, tp=2, H200)
    assert roofline(SHAPES['8b'], GPUS['H100'], 1, 300, 196).decode_s_per_token == pytest.approx(5e-3, rel=0.15)
    assert roofline(SHAPES['32b'], GPUS['H200'], 2, 300, 196).decode_s_per_token == pytest.approx(7e-3, rel=0.15)
    one, four = (roofline(SHAPES['32b'], GPUS['H200'], tp, 300, 196) for tp in (1, 4))
    assert four.decode_s_per_token == pytest.approx(one.decode_s_per_token / 4)
    assert one.total_s(48) == pytest.approx(one.prefill_s + 48 * one.decode_s_per_token)


def test_image_tokens_are_32_px_squares():
    assert image_tokens(448, 448) == 196 and image_tokens(640, 352) == 220 and image_tokens(256, 256) == 64


def test_builder_writes_the_real_config_and_tokenizer_without_torch(tmp_path):
    out = tmp_path / 'Qwen3-VL-8B-random'
    done = subprocess.run([sys.executable, str(ROOT / 'models' / 'build_random_model.py'), '--shape', '8b',
                           '--out', str(out), '--files-only'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = json.loads((out / 'config.json').read_text())
    assert config['architectures'] == ['Qwen3VLForConditionalGeneration']
    assert config['text_config']['bos_token_id'] == 151643  # lmdeploy needs it (shared/GPU.md)
    assert config['vision_config']['out_hidden_size'] == config['text_config']['hidden_size'] == 4096
    tokenizer = json.loads((out / 'tokenizer_config.json').read_text())
    assert 'chat_template' not in tokenizer and '<|image_pad|>' in tokenizer['additional_special_tokens']
    assert '<|vision_start|><|image_pad|><|vision_end|>' in (out / 'chat_template.jinja').read_text()
    again = subprocess.run([sys.executable, str(ROOT / 'models' / 'build_random_model.py'), '--shape', '8b',
                            '--out', str(out), '--files-only'], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and 'not empty' in again.stderr
