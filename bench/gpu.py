#!/usr/bin/env python3
"""The lmdeploy path on a GPU machine: `make gpu-check` and `make gpu-bench` (docs/gpu.md).

    python3 bench/gpu.py check --model DIR [--tp N] [--out DIR]
    python3 bench/gpu.py bench --model DIR [--tp N] [--gpu H100|H200] [--sizes 256,448,640] [--out DIR]
    python3 bench/gpu.py levers --model DIR [--engines bf16,bf16+prefix,fp8+prefix] [--out DIR]
    python3 bench/gpu.py fleet --model DIR [--quick] [--paths inprocess,server,proxy] [--weights bf16,fp8]
                               [--robots 1,4,8,16,32] [--max-batch-size 64 ...] [--profile-robots N] [--out DIR]
    python3 bench/gpu.py fleet-node --model DIR [--node-robots 16] [--node-guided] [--node-weights fp8]
                                    [--node-backend openai --url URL] [--point-s 10] [--out DIR]

check: the real inference_node process, lmdeploy backend, keyframes over ROS 2. Verifies that it reports
loading then idle, that plans are published for a task, that a task switch aborts the request in flight
(no plan of the old task after the switch), and that SIGINT ends it, engine included, within a bound.

bench: the lmdeploy backend in this process with the project's real prompt, answer format and guided
decoding, per image size, unguided and guided: keyframe-to-plan latency (JPEG decode + model + parse;
the node itself adds ~1.4 ms, `make bench`'s inference_overhead_ms_p50), time to first token, tokens,
load time and GPU memory, next to the roofline (vln_ros/core/model_shapes.py). Random weights never stop
on their own, so every answer is exactly ANSWER_TOKENS long (the real two-waypoint answer's length).

levers: the latency levers side by side on one model, one engine configuration after the other (weights
bf16 or fp8, prefix caching off or on): per engine the full answer unguided and guided, the time until a
plan-first answer's waypoints are complete in the stream (PLAN_FIRST_TOKENS), the image after the text
instead of before it, and the first token taken apart: a 1-token text prompt (the engine's own floor), the
text prompt alone (its prefill), the whole request (the image's share), and the HF processor on the CPU.

fleet: many robots on one engine (issue 25): N robots, each with keyframes of its own, each asking again as
soon as it is answered, for --point-s per point after --warmup-s; in-process (one lmdeploy engine, a
backend client per robot) and through `lmdeploy serve api_server` (started here with the same settings,
the openai backend per robot), and with --paths proxy through `lmdeploy serve proxy` over --proxy-servers
api_servers (a GPU each where there are enough, else sharing one). Per point: p50/p99 keyframe-to-plan and
first token over all robots and per robot, answers per second, fairness (each robot's rate against the
mean), errors, the busiest host threads' CPU and the GPU's utilization (where the ceiling is);
--profile-robots N adds a torch.profiler window at N robots (GPU kernel time against wall time). One engine
load per (path, weights); what would not fit in --budget-s is skipped and said so. The summary table is
printed at the end (bench/gpu_fleet.py).

fleet-node: the real inference_node serving --node-robots namespaces through its one engine (parameter
`robots`), driven over ROS 2 like model-paced camera_nodes (bench/gpu_fleet_node.py): per-robot plan rate and
keyframe-to-plan latency, fairness, cross-talk, and a task switch on r1 that cancels only r1's request.

Each prints one JSON object per line and writes them to --out (results.jsonl).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'bench'))  # gpu.py reuses run.py's InferenceNodeUnderTest
sys.path.insert(0, str(REPO))            # vln_ros from this checkout: the bench-only install has no editable one

# NVLink multicast can take a shared host's GPUs out of service: keep it off, children included.
os.environ.update(NCCL_NVLS_ENABLE='0', TORCH_SYMM_MEM_DISABLE_MULTICAST='1', NVSHMEM_DISABLE_NVLS='1')

ANSWER_TOKENS = 48  # Qwen3 tokens of a two-waypoint answer in the project's format (docs/nodes/inference_node.md)
# The same answer with act and wp first: its waypoints are complete after this many tokens
# ('{"act":"forward","wp":[[0.8,0,0,0.9],[0.6,0.2,20,0.7]],', the real Qwen3 tokenizer).
PLAN_FIRST_TOKENS = 35


class Results:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.file = (out / 'results.jsonl').open('a')
        self.failures: list[str] = []   # the checks expect() saw fail

    def expect(self, ok: bool, what: str) -> None:
        """A check's row; a failed one is kept for verdict()."""
        self.emit(check=what, ok=bool(ok))
        if not ok:
            self.failures.append(what)

    def verdict(self, name: str) -> int:
        """The closing row of a run of checks, and its exit code."""
        self.emit(check=name, ok=not self.failures, failures=self.failures)
        return 1 if self.failures else 0

    def emit(self, **row) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        self.file.write(line + '\n')
        self.file.flush()


def gpu_memory_mib() -> list[int]:
    """Memory in use on each GPU (nvidia-smi); empty where there is none."""
    import shutil
    if shutil.which('nvidia-smi') is None:
        return []
    done = subprocess.run(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,nounits'],
                          capture_output=True, text=True, check=False)
    return [int(v) for v in done.stdout.split()] if done.returncode == 0 else []


def model_shape(model: Path) -> str:
    """The shape name in vln_ros/core/model_shapes.py whose config matches the model folder's."""
    from vln_ros.core.model_shapes import SHAPES
    text = json.loads((model / 'config.json').read_text())['text_config']
    for name, shape in SHAPES.items():
        if (shape.hidden, shape.layers, shape.intermediate) == (
                text['hidden_size'], text['num_hidden_layers'],
                text.get('moe_intermediate_size') or text['intermediate_size']):
            return name
    raise SystemExit(f'{model}: not one of the shapes in vln_ros/core/model_shapes.py')


# -- check ------------------------------------------------------------------------------------------------

def check(args: argparse.Namespace, results: Results) -> int:
    from run import InferenceNodeUnderTest

    from vln_ros.harness import local_graph
    print(f'# {local_graph.use_private_domain().describe()}', file=sys.stderr, flush=True)
    expect = results.expect

    # Answers of random weights are whitespace under guided decoding: every request runs to max_new_tokens,
    # which makes it long enough to be caught in flight by a task switch.
    started = time.monotonic()
    node = InferenceNodeUnderTest(
        ('backend:=lmdeploy', f'model:={args.model}', f'lmdeploy.tp:={args.tp}', f'lmdeploy.executor:={args.executor}',
         f'max_new_tokens:={args.check_tokens}', 'failure_threshold:=1000', 'inference_timeout_s:=60.0',
         f'record_file:={args.out / "check_answers.jsonl"}'),
        startup_s=900, instruction='', log=args.out / 'inference_node.log')
    try:
        load_s = time.monotonic() - started
        names = [m.state_name for _, m in node.states]
        results.emit(name='check_load_s', value=round(load_s, 1), unit='s', states=names)
        expect('loading' in names and names[-1] == 'idle', f'task_status: loading, then idle ({names})')

        def feed(seconds: float, until=lambda: False) -> None:
            """Keyframes at 2 Hz (the latest wins in the node) for `seconds`, or until until() holds."""
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds and not until():
                node.msg.header.stamp = node.node.get_clock().now().to_msg()
                node.keyframes.publish(node.msg)
                time.sleep(0.5)

        first = node.set_task('go down the corridor and stop at the red door').task_id
        feed(args.check_s)
        plans = [m for _, m in node.plans if m.task_id == first]
        expect(len(plans) >= 2, f'plans published for the task ({len(plans)} in {args.check_s:.0f} s)')
        # Switch while a request is in flight. The task may have ended on its own (random weights can answer
        # `arrived` under guided decoding: seen at tp=2), so from a fresh one: it asks for a keyframe at once,
        # the 2 Hz feed answers within 0.5 s, and a request of check_tokens takes seconds.
        first = node.set_task('go down the corridor and stop at the red door').task_id
        feed(1.0)
        second = node.set_task('turn around and go back').task_id
        switched_at = time.monotonic()
        feed(args.check_s)
        after = [m for t, m in node.plans if t > switched_at]
        old_after = [m for m in after if m.task_id == first and m.action != 'new_task']
        expect(not old_after, f'no plan of the old task after the switch ({len(old_after)} seen)')
        expect(any(m.task_id == second for m in after), 'plans of the new task after the switch')
        records = [json.loads(line) for line in (args.out / 'check_answers.jsonl').read_text().splitlines()]
        cancelled = [r for r in records if r['error'] == 'cancelled' and r['task_id'] == first]
        expect(bool(cancelled), f'the request in flight at the switch was aborted ({len(cancelled)} cancelled)')
        answered = [r for r in records if not r['error']]
        expect(all(r['output_tokens'] and r['output_tokens'] > 0 for r in answered) and bool(answered),
               f'answers came from the model ({len(answered)} answers, tokens '
               f'{sorted({r["output_tokens"] for r in answered})})')
        results.emit(name='check_backend_ms_p50', value=float(node.diagnostics.get('backend_ms_p50', 'nan')),
                     unit='ms', diagnostics=node.diagnostics)
        results.emit(name='check_gpu_memory_mib', value=gpu_memory_mib(), unit='MiB')

        # Bounded shutdown: SIGINT, and the process (engine and its workers included) is gone in time.
        bound_s = 10.0 + 15.0  # lmdeploy.shutdown_timeout_s (default) + rclpy and process teardown
        import psutil
        children = psutil.Process(node.proc.pid).children(recursive=True)  # the engine's workers, if any
        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGINT)
        try:
            code = node.proc.wait(timeout=bound_s + 30)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - t0
        results.emit(name='check_shutdown_s', value=round(took, 2), unit='s', exit_code=code)
        expect(code == 0 and took <= bound_s, f'SIGINT ends the node within {bound_s:.0f} s with exit code 0 '
               f'(took {took:.1f} s, exit code {code})')
        time.sleep(1.0)
        leftovers = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        expect(not leftovers, f'none of its {len(children)} child processes left behind ({leftovers})')
    finally:
        node.close()
    return results.verdict('gpu-check')


def fleet_node(args: argparse.Namespace, results: Results) -> int:
    from gpu_fleet_node import fleet_node as run
    return run(args, results)


# -- bench ------------------------------------------------------------------------------------------------

def bench(args: argparse.Namespace, results: Results) -> int:
    import numpy as np

    from vln_ros.core.backends.base import Request
    from vln_ros.core.backends.lmdeploy_pipeline import LmdeployBackend, LmdeployParams
    from vln_ros.core.config import InferenceParams, ParserParams
    from vln_ros.core.model_shapes import GPUS, SHAPES, image_tokens, roofline
    from vln_ros.core.parser import parse_answer

    shape_name = model_shape(args.model)
    memory_before = gpu_memory_mib()
    t0 = time.perf_counter()
    section = LmdeployParams(tp=args.tp, executor=args.executor, eager_mode=args.eager)
    # The backend sections are fields only at run time (config.py): the checker knows InferenceSettings.
    params = InferenceParams.model_validate({'backend': 'lmdeploy', 'model': str(args.model), 'lmdeploy': section})
    backend = LmdeployBackend(section, params)
    load_s = time.perf_counter() - t0
    memory = gpu_memory_mib()
    common = dict(shape=shape_name, tp=args.tp, gpu=args.gpu, eager=args.eager)
    results.emit(name='gpu_load_s', value=round(load_s, 1), unit='s', **common)
    results.emit(name='gpu_memory_mib', value=[a - b for a, b in zip(memory, memory_before, strict=False)] or memory,
                 unit='MiB', note='weights + KV cache (cache_max_entry_count 0.8 of free memory)', **common)
    limits = ParserParams()
    try:
        for size in args.sizes:
            jpeg, prompt = keyframe_and_prompt(size)
            for guided in (False, True):
                request = Request(jpeg, 0, prompt, ANSWER_TOKENS, guided, size * size, ignore_eos=True)
                for _ in range(args.warmup):
                    backend.generate(request)
                latencies, first_token, outputs, inputs = [], [], [], []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    answer = backend.generate(request)
                    parse_answer(answer.text, limits)
                    latencies.append(time.perf_counter() - started)
                    first_token.append(answer.first_token_s or float('nan'))
                    outputs.append(answer.output_tokens or 0)
                    inputs.append(answer.input_tokens or 0)
                line = roofline(SHAPES[shape_name], GPUS[args.gpu], args.tp, int(np.median(inputs)),
                                image_tokens(size, size))
                p50 = float(np.percentile(latencies, 50))
                results.emit(name='gpu_keyframe_to_plan_s', size_px=size, guided=guided,
                             p50=round(p50, 4), p99=round(float(np.percentile(latencies, 99)), 4),
                             ttft_p50=round(float(np.nanpercentile(first_token, 50)), 4),
                             output_tokens=int(np.median(outputs)), input_tokens=int(np.median(inputs)),
                             roofline_s=round(line.total_s(int(np.median(outputs))), 4),
                             roofline_ttft_s=round(line.prefill_s, 4),
                             ms_per_output_token=round(1e3 * (p50 - float(np.nanpercentile(first_token, 50)))
                                                       / max(1, int(np.median(outputs)) - 1), 2),
                             roofline_ms_per_token=round(1e3 * line.decode_s_per_token, 2),
                             repeats=args.repeats, **common)
        if args.profile:
            jpeg, prompt = keyframe_and_prompt(448)
            profile(backend, Request(jpeg, 0, prompt, ANSWER_TOKENS, True, 448 * 448, ignore_eos=True), args, results,
                    common)
    finally:
        t0 = time.perf_counter()
        backend.close()
        results.emit(name='gpu_close_s', value=round(time.perf_counter() - t0, 1), unit='s', **common)
    return 0


def keyframe_and_prompt(size: int) -> tuple[bytes, Any]:
    """A synthetic keyframe JPEG of side `size` and the project's real prompt (instruction, 4 history steps)."""
    import cv2

    from vln_ros.core.config import ParserParams
    from vln_ros.core.prompts import PromptBuilder, Step
    from vln_ros.harness.frames import scene
    prompt = PromptBuilder(ParserParams(), history_steps=4).build(
        'go down the corridor and stop at the red door', [Step('a corridor with doors on both sides', 'forward')] * 4)
    return cv2.imencode('.jpg', scene(0, size, size))[1].tobytes(), prompt


def levers(args: argparse.Namespace, results: Results) -> int:
    import dataclasses
    import io

    from PIL import Image

    from vln_ros.core.backends.base import Request
    from vln_ros.core.backends.lmdeploy_pipeline import LmdeployBackend, LmdeployParams, chat_messages
    from vln_ros.core.config import InferenceParams
    from vln_ros.core.model_shapes import GPUS, SHAPES, image_tokens, roofline

    shape_name = model_shape(args.model)
    size = args.sizes[0]
    jpeg, prompt = keyframe_and_prompt(size)
    results.emit(name='gpu_processor_ms', **processor_ms(args.model, jpeg), shape=shape_name, size_px=size)
    for engine in args.engines.split(','):
        weights: Literal['auto', 'fp8'] = 'fp8' if engine.startswith('fp8') else 'auto'
        section = LmdeployParams(tp=args.tp, executor=args.executor, eager_mode=args.eager, weights=weights,
                                 prefix_caching='prefix' in engine)
        common = dict(shape=shape_name, tp=args.tp, gpu=args.gpu, engine=engine, size_px=size)
        t0 = time.perf_counter()
        backend = LmdeployBackend(section, InferenceParams.model_validate(
            {'backend': 'lmdeploy', 'model': str(args.model), 'lmdeploy': section}))
        results.emit(name='gpu_load_s', value=round(time.perf_counter() - t0, 1), unit='s', **common)
        try:
            base = Request(jpeg, 0, prompt, ANSWER_TOKENS, False, size * size, ignore_eos=True)
            variants = {'unguided': base, 'guided': dataclasses.replace(base, guided=True)}
            for variant, request in variants.items():
                timed = time_requests(backend.generate, request, args)
                line = roofline(SHAPES[shape_name], GPUS[args.gpu], args.tp, timed['input_tokens'],
                                image_tokens(size, size), weight_bytes=1 if weights == 'fp8' else 2)
                results.emit(name='gpu_lever', variant=variant, **timed,
                             roofline_s=round(line.total_s(ANSWER_TOKENS), 4),
                             roofline_plan_first_s=round(line.total_s(PLAN_FIRST_TOKENS), 4),
                             roofline_ms_per_token=round(1e3 * line.decode_s_per_token, 2), **common)
            # The first token taken apart, straight through the engine (no image decode, no parse).
            image = Image.open(io.BytesIO(jpeg)).convert('RGB')
            first = chat_messages(base, image)
            last = [first[0], {'role': 'user', 'content': list(reversed(first[1]['content']))}]
            text_only = [first[0], {'role': 'user', 'content': prompt.user}]
            tiny = [{'role': 'user', 'content': 'hi'}]
            for variant, messages in (('image_last', last), ('text_only', text_only), ('one_token_prompt', tiny)):
                timed = time_requests(lambda _r, b=backend, m=messages: engine_ttft(b, b._pipe, m), base, args,
                                      tokens=1)
                results.emit(name='gpu_first_token', variant=variant, **timed, **common)
        finally:
            t0 = time.perf_counter()
            backend.close()
            results.emit(name='gpu_close_s', value=round(time.perf_counter() - t0, 1), unit='s', **common)
    return 0


def server(args: argparse.Namespace, results: Results) -> int:
    """The openai backend against a running OpenAI-compatible server (`make gpu-serve`) with the same requests
    as `levers`: the network path's latency beside the in-process one."""
    import dataclasses

    from vln_ros.core.backends import make_backend
    from vln_ros.core.backends.base import Request
    from vln_ros.core.config import InferenceParams

    size = args.sizes[0]
    backend = make_backend(InferenceParams.model_validate(
        {'backend': 'openai', 'inference_timeout_s': 60.0, 'openai': {'base_url': args.url}}))
    jpeg, prompt = keyframe_and_prompt(size)
    base = Request(jpeg, 0, prompt, ANSWER_TOKENS, False, size * size, ignore_eos=True)
    for guided in (False, True):
        timed = time_requests(backend.generate, dataclasses.replace(base, guided=guided), args)
        results.emit(name='gpu_openai_backend', variant='guided' if guided else 'unguided', **timed,
                     shape=model_shape(args.model), size_px=size, url=args.url)
    return 0


def processor_ms(model: Path, jpeg: bytes) -> dict:
    """The Hugging Face processor's image step on the CPU, as lmdeploy runs it before the engine (p50 of 20)."""
    import io

    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(str(model))
    image = Image.open(io.BytesIO(jpeg)).convert('RGB')
    times = []
    for _ in range(22):
        t0 = time.perf_counter()
        processor.image_processor(images=[image], return_tensors='pt')
        times.append(time.perf_counter() - t0)
    return {'value': round(1e3 * float(np.median(times[2:])), 2), 'unit': 'ms',
            'processor': type(processor.image_processor).__name__}


def engine_ttft(backend, pipe, messages) -> object:
    """One request of one output token straight through lmdeploy: an Answer-like with first_token_s."""
    from vln_ros.core.backends.base import Answer
    gen = backend._lmdeploy.GenerationConfig(max_new_tokens=1, do_sample=False, ignore_eos=True)
    started = time.perf_counter()
    first = None
    inputs = None
    for out in pipe.stream_infer(messages, sessions=pipe.session(), gen_config=gen):
        if first is None and out.generate_token_len:
            first = time.perf_counter() - started
        inputs = out.input_token_len or inputs
    return Answer('', time.perf_counter() - started, inputs, 1, first)


def time_requests(call, request, args: argparse.Namespace, tokens: int = ANSWER_TOKENS) -> dict:
    """p50s over args.repeats requests after args.warmup: whole answer, first token, the moment the
    PLAN_FIRST_TOKENS-th output token arrived (a plan-first answer's waypoints), ms per output token."""
    import dataclasses

    import numpy as np
    total, first, plan_ready, inputs = [], [], [], []
    for i in range(args.warmup + args.repeats):
        marks: list[tuple[int, float]] = []
        started = time.perf_counter()
        timed = dataclasses.replace(request, on_chunk=lambda _t, n, m=marks: m.append((n, time.perf_counter())))
        answer = call(timed)
        if i < args.warmup:
            continue
        total.append(time.perf_counter() - started)
        first.append(answer.first_token_s or float('nan'))
        inputs.append(answer.input_tokens or 0)
        ready = [t for n, t in marks if n >= PLAN_FIRST_TOKENS]
        plan_ready.append(ready[0] - started if ready else float('nan'))
    p50 = float(np.median(total))
    ttft = float(np.nanmedian(first))
    row = {'p50': round(p50, 4), 'p99': round(float(np.percentile(total, 99)), 4), 'ttft_p50': round(ttft, 4),
           'input_tokens': int(np.median(inputs)), 'repeats': args.repeats}
    if tokens > 1:
        row['plan_first_ready_p50'] = round(float(np.nanmedian(plan_ready)), 4)
        row['ms_per_output_token'] = round(1e3 * (p50 - ttft) / (tokens - 1), 2)
    return row


def profile(backend, request, args: argparse.Namespace, results: Results, common: dict) -> None:
    """Where one request's time goes, unguided and guided: GPU kernel time (CUPTI sees every kernel of the
    process, the engine's thread included) against wall time, and the top kernels and CPU ops."""
    import dataclasses

    import torch
    from torch.profiler import ProfilerActivity
    for guided in (False, True):
        req = dataclasses.replace(request, guided=guided)
        backend.generate(req)  # warm
        with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            started = time.perf_counter()
            backend.generate(req)
            wall = time.perf_counter() - started
        events = prof.key_averages()

        def device_us(e) -> float:
            return getattr(e, 'self_device_time_total', 0.0) or getattr(e, 'self_cuda_time_total', 0.0)
        kernel_s = sum(device_us(e) for e in events) / 1e6
        top_gpu = sorted(events, key=device_us, reverse=True)[:6]
        top_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
        (args.out / f'profile_{"guided" if guided else "unguided"}.txt').write_text(
            events.table(sort_by='self_cpu_time_total', row_limit=40))
        results.emit(name='gpu_profile', guided=guided, wall_s=round(wall, 4), gpu_kernel_s=round(kernel_s, 4),
                     gpu_busy=round(kernel_s / wall, 3),
                     top_gpu=[(e.key[:60], round(device_us(e) / 1e3, 1)) for e in top_gpu],
                     top_cpu=[(e.key[:60], round(e.self_cpu_time_total / 1e3, 1)) for e in top_cpu], **common)


def fleet(args: argparse.Namespace, results: Results) -> int:
    """Issue 25's fleet benchmark: the sweep over paths, weights, guided and robots (module docstring)."""
    from gpu_fleet import Levers, table

    started = time.monotonic()
    levers = Levers(max_batch_size=args.max_batch_size, cache_max_entry_count=args.cache_max_entry_count,
                    max_prefill_token_num=args.max_prefill_token_num, prefill_interval=args.prefill_interval,
                    metrics=not args.disable_metrics, mp_engine=args.mp_engine,
                    cudagraph_batch_sizes=args.cudagraph_sizes, block_size=args.block_size)
    shape = model_shape(args.model)
    point_cost_s = args.warmup_s + args.point_s + 4.0   # + drain, clients, the row
    rows: list[dict] = []
    # first guesses (shared/GPU.md), then measured
    loads: dict[str, float] = {'inprocess': 100.0, 'server': 130.0, 'proxy': 260.0}
    for path in args.paths:
        for weights in args.weights:
            common = dict(path=path, weights=weights, shape=shape, gpu=args.gpu, tp=args.tp, size_px=args.size,
                          answer_tokens=args.answer_tokens, levers=levers.__dict__)
            left_s = args.budget_s - (time.monotonic() - started)
            if left_s < loads[path] + point_cost_s + 20:
                rows.append(dict(common, skipped=f'{left_s:.0f} s of --budget-s left, a load takes '
                                                 f'~{loads[path]:.0f} s'))
                results.emit(name='gpu_fleet', **rows[-1])
                continue
            t0 = time.monotonic()
            engine = fleet_engine(path, weights, levers, args)
            try:
                make_client, sampler = engine.__enter__()
            except Exception as exc:  # a server that never came up, an engine that would not load: said, and on
                rows.append(dict(common, skipped=f'failed to start: {exc}'[:400]))
                results.emit(name='gpu_fleet', **rows[-1])
                continue
            try:
                loads[path] = time.monotonic() - t0
                results.emit(name='gpu_fleet_load_s', value=round(loads[path], 1), unit='s', **common)
                results.emit(name='gpu_fleet_memory_mib', value=gpu_memory_mib(), unit='MiB',
                             note='the whole card: weights + KV cache', **common)
                for guided in args.guided:
                    # First use compiles (xgrammar, the fp8 kernels): one robot for a second, in no point.
                    fleet_point(make_client, sampler, 1, guided, 0.0, 1.0, args)
                    for robots in args.robots:
                        left_s = args.budget_s - (time.monotonic() - started)
                        if left_s < point_cost_s + 20:
                            rows.append(dict(common, guided=guided, robots=robots, skipped=f'{left_s:.0f} s left'))
                            results.emit(name='gpu_fleet', **rows[-1])
                            continue
                        row = fleet_point(make_client, sampler, robots, guided, args.warmup_s, args.point_s, args)
                        rows.append(dict(common, guided=guided, **row))
                        results.emit(name='gpu_fleet', **rows[-1])
                if args.profile_robots and path == 'inprocess' \
                        and args.budget_s - (time.monotonic() - started) > point_cost_s + 30:
                    fleet_profile(make_client, sampler, args, results, common)
            finally:
                t0 = time.monotonic()
                engine.__exit__(None, None, None)
                results.emit(name='gpu_close_s', value=round(time.monotonic() - t0, 1), unit='s', **common)
    print('\n' + table(rows), flush=True)
    (args.out / 'fleet_table.md').write_text(table(rows) + '\n')
    return 0


def fleet_engine(path: str, weights: str, levers, args: argparse.Namespace):
    """A context manager: the engine of one (path, weights), yielding (a factory of one robot's backend
    client, the HostSampler of the process that runs the engine)."""
    import contextlib

    from gpu_fleet import HostSampler, api_server_command, quote

    from vln_ros.core.backends import make_backend
    from vln_ros.core.backends.lmdeploy_pipeline import LmdeployBackend, LmdeployParams
    from vln_ros.core.config import InferenceParams

    @contextlib.contextmanager
    def inprocess():
        section = LmdeployParams(tp=args.tp, executor=args.executor, eager_mode=args.eager,
                                 weights='fp8' if weights == 'fp8' else 'auto', max_batch_size=levers.max_batch_size,
                                 cache_max_entry_count=levers.cache_max_entry_count, session_len=levers.session_len)
        params = InferenceParams.model_validate({'backend': 'lmdeploy', 'model': str(args.model), 'lmdeploy': section})
        backend = LmdeployBackend(section, params, engine_extra=levers.engine_extra())
        try:
            yield backend.client, HostSampler()
        finally:
            backend.close()
            # The caching allocator keeps the engine's memory: give it back before the next engine (or the
            # api_server, another process, which sizes its KV cache from what is free) loads.
            import gc

            import torch
            gc.collect()
            torch.cuda.empty_cache()

    def launch(command: list[str], log_path: Path, env: dict[str, str] | None = None,
               note: str = '') -> subprocess.Popen:
        """A server process in a session of its own (stop_process_group ends it), its output in log_path."""
        print(f'# {quote(command)}  (log: {log_path}{note})', file=sys.stderr, flush=True)
        with log_path.open('w') as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def openai_clients(base_url: str, served: str):
        """A factory of one robot's openai backend against base_url."""
        def client():
            return make_backend(InferenceParams.model_validate({
                'backend': 'openai', 'model': str(args.model), 'inference_timeout_s': 60.0,
                'openai': {'base_url': base_url, 'served_model': served}}))
        return client

    @contextlib.contextmanager
    def server():
        command = api_server_command(sys.executable, str(args.model), levers, weights == 'fp8', args.port, args.tp,
                                     args.executor)
        log_path = args.out / f'api_server_{weights}.log'
        proc = launch(command, log_path)
        try:
            base_url = f'http://127.0.0.1:{args.port}/v1'
            served = wait_for_server(base_url, proc, args.server_start_s, log_path)
            yield openai_clients(base_url, served), HostSampler(pid=proc.pid)
        finally:
            stop_process_group(proc, 20.0)

    @contextlib.contextmanager
    def proxy():
        # `lmdeploy serve proxy` over --proxy-servers api_servers: one a GPU where there are enough, else all on
        # one GPU, started one after another, each with its share of the KV cache (each sizes its cache from
        # what is free when it loads).
        import dataclasses
        import urllib.request

        import torch
        count = args.proxy_servers
        # GPUs by the indices this process sees (CUDA_VISIBLE_DEVICES may already narrow them), tp for each server
        visible = (os.environ.get('CUDA_VISIBLE_DEVICES') or ','.join(map(str, range(torch.cuda.device_count()))))
        gpus = [g for g in visible.split(',') if g.strip()]
        own_gpu = len(gpus) >= count * args.tp
        share = levers if own_gpu else dataclasses.replace(
            levers, cache_max_entry_count=round(levers.cache_max_entry_count / count, 3))
        procs: list[subprocess.Popen] = []
        try:
            for i in range(count):
                port = args.port + 1 + i
                command = api_server_command(sys.executable, str(args.model), share, weights == 'fp8', port, args.tp,
                                             args.executor)
                log_path = args.out / f'api_server_{weights}_{i}.log'
                mine = ','.join(gpus[i * args.tp:(i + 1) * args.tp])
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=mine) if own_gpu else None
                procs.append(launch(command, log_path, env, f', GPUs {mine}' if own_gpu else ''))
                wait_for_server(f'http://127.0.0.1:{port}/v1', procs[-1], args.server_start_s, log_path)
            command = [sys.executable, '-m', 'lmdeploy', 'serve', 'proxy', '--server-name', '127.0.0.1',
                       '--server-port', str(args.port), '--routing-strategy', args.proxy_strategy,
                       '--disable-cache-status']
            log_path = args.out / 'proxy.log'
            procs.append(launch(command, log_path))
            proxy_url = f'http://127.0.0.1:{args.port}'
            deadline = time.monotonic() + 60.0
            for i in range(count):
                body = json.dumps({'url': f'http://127.0.0.1:{args.port + 1 + i}'}).encode()
                while True:   # the proxy's port opens a moment after its process starts
                    try:
                        urllib.request.urlopen(urllib.request.Request(
                            proxy_url + '/nodes/add', data=body, headers={'Content-Type': 'application/json'}),
                            timeout=5.0).read()
                        break
                    except OSError as exc:
                        if time.monotonic() > deadline or procs[-1].poll() is not None:
                            raise RuntimeError('the proxy did not take its servers: '
                                               + log_path.read_text()[-2000:]) from exc
                        time.sleep(0.5)
            served = wait_for_server(proxy_url + '/v1', procs[-1], 30.0, log_path)
            yield openai_clients(proxy_url + '/v1', served), HostSampler(pid=procs[0].pid)
        finally:
            for proc in reversed(procs):
                stop_process_group(proc, 20.0)

    return {'inprocess': inprocess, 'server': server, 'proxy': proxy}[path]()


def wait_for_server(base_url: str, proc: subprocess.Popen, bound_s: float, log: Path) -> str:
    """The served model's name once the server answers /v1/models; RuntimeError with its log's tail if it
    exits or stays silent for bound_s."""
    import urllib.error
    import urllib.request
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'api_server exited with {proc.returncode}: ' + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(base_url + '/models', timeout=2.0) as reply:
                return json.loads(reply.read())['data'][0]['id']
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError):
            time.sleep(1.0)
    stop_process_group(proc, 10.0)
    raise RuntimeError(f'api_server not answering after {bound_s:.0f} s: ' + log.read_text()[-3000:])


def stop_process_group(proc: subprocess.Popen, bound_s: float) -> None:
    """SIGINT to the server's process group (its engine workers too), SIGKILL after bound_s."""
    if proc.poll() is None:
        with contextlib_suppress():
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=bound_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib_suppress():
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group (workers), if anything
    proc.wait(timeout=10.0)


def contextlib_suppress():
    import contextlib
    return contextlib.suppress(ProcessLookupError, PermissionError)


def fleet_point(make_client, sampler, robots: int, guided: bool, warmup_s: float, measure_s: float,
                args: argparse.Namespace) -> dict:
    """One point: `robots` clients in the closed loop; the summary row, with the host's figures over the
    measuring window."""
    import threading

    from gpu_fleet import closed_loop, point_row, summarize

    from vln_ros.core.backends.base import BackendError, Request
    from vln_ros.core.config import ParserParams
    from vln_ros.core.parser import parse_answer

    clients = [make_client() for _ in range(robots)]
    frames = robot_keyframes(robots, args.size)
    _, prompt = keyframe_and_prompt(args.size)
    limits = ParserParams()

    def call(robot: int, number: int) -> float | None:
        jpegs = frames[robot]
        answer = clients[robot].generate(Request(jpegs[number % len(jpegs)], number, prompt, args.answer_tokens,
                                                 guided, args.size * args.size, ignore_eos=True))
        parse_answer(answer.text, limits)  # keyframe -> plan, as the node does it
        return answer.first_token_s

    host: dict = {}
    timers = [threading.Timer(warmup_s, sampler.start),
              threading.Timer(warmup_s + measure_s, lambda: host.update(sampler.stop()))]
    for timer in timers:
        timer.start()
    try:
        exchanges, window = closed_loop(
            call, robots, warmup_s, measure_s, drain_s=30.0,
            error_reason=lambda exc: exc.reason if isinstance(exc, BackendError) else type(exc).__name__,
            on_timeout=lambda: cancel_all(clients))
    finally:
        for timer in timers:
            timer.join()
        for client in clients:
            client.close()
    return point_row(**summarize(exchanges, robots, window), host=host, point_s=measure_s)


def cancel_all(clients: list) -> None:
    for client in clients:
        client.cancel()


def fleet_profile(make_client, sampler, args: argparse.Namespace, results: Results, common: dict) -> None:
    """torch.profiler over a short closed loop at --profile-robots robots, unguided: GPU kernel time against wall
    time (CUPTI sees every kernel of the process), top kernels and CPU ops (the table goes to --out)."""
    import torch
    from torch.profiler import ProfilerActivity

    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        row = fleet_point(make_client, sampler, args.profile_robots, False, 1.0, 2.0, args)  # short: big traces
        wall = time.perf_counter() - t0
    events = prof.key_averages()

    def device_us(e) -> float:
        return getattr(e, 'self_device_time_total', 0.0) or getattr(e, 'self_cuda_time_total', 0.0)
    kernel_s = sum(device_us(e) for e in events) / 1e6
    (args.out / f'fleet_profile_{common["weights"]}.txt').write_text(
        events.table(sort_by='self_cpu_time_total', row_limit=50))
    results.emit(name='gpu_fleet_profile', robots=args.profile_robots, wall_s=round(wall, 3),
                 gpu_kernel_s=round(kernel_s, 3), gpu_busy=round(kernel_s / wall, 3),
                 answers_per_s=row['answers_per_s'], host=row['host'],
                 top_gpu=[(e.key[:60], round(device_us(e) / 1e3, 1))
                          for e in sorted(events, key=device_us, reverse=True)[:8]],
                 top_cpu=[(e.key[:60], round(e.self_cpu_time_total / 1e3, 1))
                          for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]],
                 note='profiler on: figures slower than the points', **common)


def robot_keyframes(robots: int, size: int, per_robot: int = 3) -> list[list[bytes]]:
    """Keyframe JPEGs of side `size`, different for every robot and request (no prefix hides an image's cost)."""
    import cv2

    from vln_ros.harness.frames import scene
    return [[cv2.imencode('.jpg', scene(1000 + per_robot * robot + i, size, size))[1].tobytes()
             for i in range(per_robot)] for robot in range(robots)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('what', choices=('check', 'bench', 'levers', 'server', 'fleet', 'fleet-node'))
    parser.add_argument('--url', default='http://127.0.0.1:23333/v1', help='server: the OpenAI-compatible API')
    parser.add_argument('--model', type=Path, required=True)
    parser.add_argument('--tp', type=int, default=1)
    parser.add_argument('--executor', default='mp', help='mp or ray, for tp > 1 (the GPU test machines lack Ray)')
    parser.add_argument('--out', type=Path, default=REPO / 'gpu_out')
    parser.add_argument('--gpu', default='H200', choices=('H100', 'H200'), help='for the roofline')
    parser.add_argument('--sizes', default='256,448,640', help='keyframe sides [px]')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--eager', action='store_true', help='no CUDA graphs')
    parser.add_argument('--profile', action='store_true', help='also profile one 448 px request (torch.profiler)')
    parser.add_argument('--engines', default='bf16,bf16+prefix,fp8+prefix',
                        help='levers: engine configurations, each bf16|fp8 with +prefix for prefix caching')
    parser.add_argument('--check-tokens', type=int, default=512, help='max_new_tokens during the check')
    parser.add_argument('--check-s', type=float, default=12.0, help='seconds of keyframes per task in the check')
    fleet_options = parser.add_argument_group('fleet')
    fleet_options.add_argument('--quick', action='store_true',
                               help='a first check: bf16, 1 and 8 robots, 4 s points, both paths')
    fleet_options.add_argument('--paths', default='inprocess,server',
                               help='inprocess, server (api_server) and/or proxy (--proxy-servers behind the proxy)')
    fleet_options.add_argument('--weights', default='bf16,fp8', help='bf16 and/or fp8, one engine load each')
    fleet_options.add_argument('--guided', default='no,yes', help='unguided (no) and/or guided (yes) points')
    fleet_options.add_argument('--robots', default='1,4,8,16,32', help='robots per point')
    fleet_options.add_argument('--point-s', type=float, default=10.0, help='measuring window of a point [s]')
    fleet_options.add_argument('--warmup-s', type=float, default=2.0, help='closed loop before the window [s]')
    fleet_options.add_argument('--size', type=int, default=448, help='keyframe side [px]')
    fleet_options.add_argument('--max-batch-size', type=int, default=64)
    fleet_options.add_argument('--cache-max-entry-count', type=float, default=0.8)
    fleet_options.add_argument('--max-prefill-token-num', type=int, default=8192)
    fleet_options.add_argument('--prefill-interval', type=int, default=16,
                               help='decode steps before waiting requests are prefilled anyway (in-process only)')
    fleet_options.add_argument('--disable-metrics', action='store_true', help="lmdeploy's request metrics off")
    fleet_options.add_argument('--mp-engine', action='store_true',
                               help='in-process: the engine in a process of its own (the api_server always does)')
    fleet_options.add_argument('--answer-tokens', type=int, default=ANSWER_TOKENS,
                               help='tokens of every answer (ignore_eos; a shorter answer format: fewer decode steps)')
    fleet_options.add_argument('--cudagraph-sizes', default='',
                               help="batch sizes to capture CUDA graphs for, e.g. 1,2,4,8,16,24,32 (empty: lmdeploy's)")
    fleet_options.add_argument('--block-size', type=int, default=64, help="the KV cache's block length [tokens]")
    fleet_options.add_argument('--profile-robots', type=int, default=0, metavar='N',
                               help='also a torch.profiler window at N robots (in-process, unguided)')
    fleet_options.add_argument('--node-robots', type=int, default=16, help='fleet-node: robots on the one node')
    fleet_options.add_argument('--node-tokens', type=int, default=ANSWER_TOKENS,
                               help="fleet-node: the node's max_new_tokens (random weights run to it)")
    fleet_options.add_argument('--node-backend', default='lmdeploy', choices=('lmdeploy', 'openai'),
                               help='fleet-node: the engine in the node, or an OpenAI-compatible server at --url')
    fleet_options.add_argument('--node-guided', action='store_true', help='fleet-node: guided JSON decoding')
    fleet_options.add_argument('--node-weights', default='auto', choices=('auto', 'fp8'),
                               help="fleet-node: the node's lmdeploy.weights (fp8: online FP8 of the text linears)")
    fleet_options.add_argument('--port', type=int, default=23333, help='the api_server started for --paths server')
    fleet_options.add_argument('--proxy-servers', type=int, default=2,
                               help='--paths proxy: api_servers behind `lmdeploy serve proxy` (--port), on ports '
                                    'after it; --tp GPUs each where there are enough, else sharing them')
    fleet_options.add_argument('--proxy-strategy', default='min_expected_latency',
                               choices=('random', 'min_expected_latency', 'min_observed_latency'),
                               help="--paths proxy: the proxy's routing strategy")
    fleet_options.add_argument('--server-start-s', type=float, default=300.0, help='bound on the server start-up')
    fleet_options.add_argument('--budget-s', type=float, default=450.0,
                               help='what would not end within this (from the start) is skipped, said so')
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(',')]
    if args.quick:
        args.weights, args.robots, args.point_s, args.warmup_s = 'bf16', '1,8', 4.0, 1.0
    args.paths = fleet_choices('--paths', args.paths, ('inprocess', 'server', 'proxy'))
    if args.proxy_servers < 1:
        parser.error('--proxy-servers: at least 1')
    args.weights = fleet_choices('--weights', args.weights, ('bf16', 'fp8'))
    args.guided = [g == 'yes' for g in fleet_choices('--guided', args.guided, ('no', 'yes'))]
    args.robots = [int(n) for n in args.robots.split(',')]
    args.cudagraph_sizes = tuple(int(n) for n in args.cudagraph_sizes.split(',') if n)
    results = Results(args.out)
    return {'check': check, 'bench': bench, 'levers': levers, 'server': server,
            'fleet': fleet, 'fleet-node': fleet_node}[args.what](args, results)


def fleet_choices(option: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    chosen = [v for v in value.split(',') if v]
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise SystemExit(f'{option} {value!r}: each of {", ".join(allowed)}')
    return chosen


if __name__ == '__main__':  # lmdeploy's start-up spawns processes that import this module
    sys.exit(main())
