"""Many robots on one engine: the closed loop, the statistics and the engine's levers of `bench/gpu.py fleet`.

Everything here runs without a GPU (test/test_gpu_fleet.py drives it against test/openai_server.py); gpu.py
builds the engines and calls it. Each robot is an asyncio task that asks again as soon as it is answered
(closed loop) through its own backend client, in a thread of its own (the backends block); a point is the
answers that came back inside a measuring window after a warm-up, per robot and together.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Issue 25's targets: one H200, 8B. Fairness: each robot's answer rate within +-15 % of the mean (at 16).
FAIRNESS_TOLERANCE = 0.15
TARGETS: dict[int, dict[str, float]] = {16: {'p50_max_s': 0.45, 'p99_max_s': 0.8, 'answers_per_s_min': 35.0},
                                        32: {'p50_max_s': 0.7}}


@dataclass(frozen=True)
class Levers:
    """The engine settings a fleet may need, the same for the in-process engine and the api_server."""

    max_batch_size: int = 64
    cache_max_entry_count: float = 0.8
    max_prefill_token_num: int = 8192      # lmdeploy 0.18's default
    prefill_interval: int = 16             # lmdeploy's default; in-process only (api_server has no flag)
    metrics: bool = True                   # lmdeploy's per-request metrics (on by default in 0.18)
    # The engine in a process of its own (zmq), apart from the pipeline's preprocessing and the robots' threads:
    # lmdeploy's api_server always does this; the in-process pipeline does not unless asked.
    mp_engine: bool = False
    session_len: int = 8192                # the node's lmdeploy.session_len default
    # Below the API, for the host-side ceiling (docs/gpu_latency.md, "Not tried yet"): the batch sizes CUDA graphs
    # are captured for (empty: lmdeploy's, inferred from max_batch_size), and the KV cache's block length in
    # tokens (fewer, longer blocks: less block-table work per step on the host).
    cudagraph_batch_sizes: tuple[int, ...] = ()
    block_size: int = 64                   # lmdeploy 0.18's default

    def engine_extra(self) -> dict[str, Any]:
        """PytorchEngineConfig fields beyond the node's parameters (LmdeployBackend's engine_extra)."""
        extra: dict[str, Any] = {'max_prefill_token_num': self.max_prefill_token_num,
                                 'prefill_interval': self.prefill_interval, 'enable_metrics': self.metrics}
        if self.mp_engine:
            extra['enable_mp_engine'] = True
        if self.cudagraph_batch_sizes:
            extra['cudagraph_capture_batch_sizes'] = list(self.cudagraph_batch_sizes)
        if self.block_size != 64:
            extra['block_size'] = self.block_size
        return extra


def api_server_command(python: str, model: str, levers: Levers, fp8: bool, port: int, tp: int = 1,
                       executor: str = 'mp') -> list[str]:
    """`lmdeploy serve api_server` with the settings the in-process engine gets (LmdeployParams + levers)."""
    command = [python, '-m', 'lmdeploy', 'serve', 'api_server', model, '--backend', 'pytorch',
               '--server-name', '127.0.0.1', '--server-port', str(port), '--tp', str(tp),
               '--session-len', str(levers.session_len), '--max-batch-size', str(levers.max_batch_size),
               '--cache-max-entry-count', str(levers.cache_max_entry_count),
               '--max-prefill-token-num', str(levers.max_prefill_token_num), '--log-level', 'WARNING']
    if tp > 1:  # the lent machines have no Ray (shared/GPU.md)
        command += ['--distributed-executor-backend', executor]
    if fp8:
        command += ['--model-format', 'fp8']
    if not levers.metrics:
        command.append('--disable-metrics')
    if levers.cudagraph_batch_sizes:
        command += ['--cudagraph-capture-batch-sizes', *map(str, levers.cudagraph_batch_sizes)]
    if levers.block_size != 64:
        command += ['--cache-block-seq-len', str(levers.block_size)]   # api_server's name for block_size
    return command


def quote(command: Sequence[str]) -> str:
    return ' '.join(shlex.quote(c) for c in command)


@dataclass(frozen=True)
class Exchange:
    """One request of one robot: when it was sent and came back (s since the point's start), or why it failed."""

    robot: int
    sent_s: float
    done_s: float
    first_token_s: float | None = None
    error: str = ''

    @property
    def latency_s(self) -> float:
        return self.done_s - self.sent_s


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear, numpy's default) of values; nan when there are none."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def fairness(rates_hz: Sequence[float], tolerance: float = FAIRNESS_TOLERANCE) -> dict[str, Any]:
    """Each robot's answer rate against the mean: the worst relative deviation, and whether all are within
    tolerance. A robot that got nothing is 100 % off."""
    if not rates_hz:
        raise ValueError(f'fairness of no robots: rates {list(rates_hz)}')
    mean = sum(rates_hz) / len(rates_hz)
    if mean <= 0:
        return {'mean_hz': 0.0, 'min_ratio': math.nan, 'max_ratio': math.nan, 'worst_deviation': math.nan,
                'within': False, 'tolerance': tolerance}
    ratios = [r / mean for r in rates_hz]
    worst = max(abs(r - 1.0) for r in ratios)
    return {'mean_hz': round(mean, 3), 'min_ratio': round(min(ratios), 3), 'max_ratio': round(max(ratios), 3),
            'worst_deviation': round(worst, 3), 'within': worst <= tolerance, 'tolerance': tolerance}


def summarize(exchanges: Sequence[Exchange], robots: int, window: tuple[float, float]) -> dict[str, Any]:
    """A point's figures from the exchanges that ended inside window (start_s, end_s): all robots together
    (p50, p99, first token, answers per second) and per robot, with fairness over the robots' rates."""
    start_s, end_s = window
    if robots < 1 or end_s <= start_s:
        raise ValueError(f'summarize needs robots >= 1 and a window of positive length: {robots}, {window}')
    seconds = end_s - start_s
    inside = [e for e in exchanges if start_s <= e.done_s <= end_s]
    answered = [e for e in inside if not e.error]
    per_robot: list[dict[str, Any]] = []
    for robot in range(robots):
        mine = [e for e in answered if e.robot == robot]
        per_robot.append({'robot': robot, 'answers': len(mine), 'rate_hz': round(len(mine) / seconds, 3),
                          'p50_s': _r(percentile([e.latency_s for e in mine], 50)),
                          'p99_s': _r(percentile([e.latency_s for e in mine], 99)),
                          'first_token_p50_s': _r(percentile(first_tokens(mine), 50))})
    first = first_tokens(answered)
    return {'robots': robots, 'window_s': round(seconds, 3), 'answers': len(answered),
            'answers_per_s': round(len(answered) / seconds, 3),
            'p50_s': _r(percentile([e.latency_s for e in answered], 50)),
            'p99_s': _r(percentile([e.latency_s for e in answered], 99)),
            'first_token_p50_s': _r(percentile(first, 50)), 'first_token_p99_s': _r(percentile(first, 99)),
            'errors': dict(Counter(e.error for e in inside if e.error)),
            'fairness': fairness([row['rate_hz'] for row in per_robot]),
            'per_robot': per_robot}


def first_tokens(exchanges: Sequence[Exchange]) -> list[float]:
    return [e.first_token_s for e in exchanges if e.first_token_s is not None]


def _r(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def against_targets(row: dict[str, Any]) -> dict[str, bool]:
    """Issue 25's targets for this number of robots (none for the others), met or not."""
    target = TARGETS.get(row['robots'], {})
    checks: dict[str, bool] = {}
    if 'p50_max_s' in target:
        checks[f'p50<={target["p50_max_s"]}s'] = row['p50_s'] is not None and row['p50_s'] <= target['p50_max_s']
    if 'p99_max_s' in target:
        checks[f'p99<={target["p99_max_s"]}s'] = row['p99_s'] is not None and row['p99_s'] <= target['p99_max_s']
    if 'answers_per_s_min' in target:
        checks[f'>={target["answers_per_s_min"]:g}/s'] = row['answers_per_s'] >= target['answers_per_s_min']
    if row['robots'] == 16:
        checks[f'fair+-{FAIRNESS_TOLERANCE:.0%}'] = bool(row['fairness']['within'])
    return checks


# -- the closed loop -----------------------------------------------------------------------------------------

# (robot, its request number) -> first-token time in s (None where unknown); raises on failure. Blocking.
Call = Callable[[int, int], float | None]


def closed_loop(call: Call, robots: int, warmup_s: float, measure_s: float, drain_s: float = 30.0,
                error_reason: Callable[[BaseException], str] = lambda exc: type(exc).__name__,
                on_timeout: Callable[[], None] = lambda: None) -> tuple[list[Exchange], tuple[float, float]]:
    """Each robot asks again as soon as it is answered, for warmup_s + measure_s; then no robot asks again and
    the requests in flight get drain_s to end (on_timeout is called for any still running: cancel them).
    Returns every exchange and the measuring window (s since the start)."""
    if robots < 1 or measure_s <= 0 or warmup_s < 0:
        raise ValueError(f'closed_loop needs robots >= 1, measure_s > 0, warmup_s >= 0: '
                         f'{robots}, {measure_s}, {warmup_s}')
    exchanges: list[Exchange] = []
    lock = threading.Lock()
    started = time.perf_counter()
    stop_at = warmup_s + measure_s
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=robots, thread_name_prefix='fleet_robot')

    def one(robot: int, number: int) -> Exchange:
        sent = time.perf_counter() - started
        try:
            first = call(robot, number)
        except Exception as exc:  # a failed request is counted by reason, the robot asks again
            return Exchange(robot, sent, time.perf_counter() - started, None, error_reason(exc) or 'error')
        return Exchange(robot, sent, time.perf_counter() - started, first)

    async def robot_task(robot: int) -> None:
        loop = asyncio.get_running_loop()
        number = 0
        while True:  # every robot asks at least once
            exchange = await loop.run_in_executor(pool, one, robot, number)
            number += 1
            with lock:
                exchanges.append(exchange)
            if time.perf_counter() - started >= stop_at:
                return
            if exchange.error:  # a server that fails at once must not become a busy loop
                await asyncio.sleep(0.05)

    async def fleet() -> None:
        tasks = [asyncio.create_task(robot_task(r)) for r in range(robots)]
        _, pending = await asyncio.wait(tasks, timeout=stop_at + drain_s)
        if pending:
            on_timeout()
            await asyncio.wait(pending, timeout=drain_s)
            for task in pending:
                task.cancel()

    try:
        asyncio.run(fleet())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    with lock:
        return list(exchanges), (warmup_s, stop_at)


# -- where the host's time goes ------------------------------------------------------------------------------

@dataclass
class HostSampler:
    """CPU time per thread of a process and its children over a window, and the GPU's utilization sampled
    meanwhile (NVML, where there is one): a thread near 100 % of one core while the GPU idles is the host-side
    ceiling. Children count: lmdeploy's api_server always runs its engine in a process of its own
    (enable_mp_engine), the in-process engine does with --mp-engine. pid None: this process."""

    pid: int | None = None
    interval_s: float = 0.2
    _threads0: dict[tuple[int, int], float] = field(default_factory=dict)
    _t0: float = 0.0
    _gpu: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def _snapshot(self) -> dict[tuple[int, int], float]:
        """(pid, tid) -> CPU seconds, for the process and all its descendants."""
        import psutil
        root = psutil.Process(self.pid)
        threads: dict[tuple[int, int], float] = {}
        for proc in [root, *root.children(recursive=True)]:
            try:
                for t in proc.threads():
                    threads[(proc.pid, t.id)] = t.user_time + t.system_time
            except psutil.Error:  # a child that ended meanwhile
                pass
        return threads

    def start(self) -> None:
        self._threads0 = self._snapshot()
        self._t0 = time.perf_counter()
        self._gpu = []
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample_gpu, name='fleet_gpu_sampler', daemon=True)
        self._sampler.start()

    def _sample_gpu(self) -> None:
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML here (a CPU machine): no GPU figure
            return
        while not self._stop.wait(self.interval_s):
            self._gpu.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def stop(self) -> dict[str, Any]:
        seconds = max(1e-6, time.perf_counter() - self._t0)
        threads = self._snapshot()
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(2.0)
        root = os.getpid() if self.pid is None else self.pid
        own = {t.native_id: t.name for t in threading.enumerate()} if root == os.getpid() else {}
        busy = sorted((((cpu - self._threads0.get(key, 0.0)) / seconds, key) for key, cpu in threads.items()),
                      reverse=True)

        def name(pid: int, tid: int) -> str:
            thread = own.get(tid) if pid == root else None
            return thread or thread_comm(pid, tid) + ('' if pid == root else f' (child {pid})')
        return {'process_cpu_cores': round(sum(b for b, (pid, _) in busy if pid == root), 2),
                'children_cpu_cores': round(sum(b for b, (pid, _) in busy if pid != root), 2),
                'busiest_threads': [(name(pid, tid), round(share, 2)) for share, (pid, tid) in busy[:5]],
                'gpu_util_mean': round(sum(self._gpu) / len(self._gpu), 1) if self._gpu else None}


def thread_comm(pid: int, tid: int) -> str:
    """Another process's thread's name as Linux knows it (its tid where there is none)."""
    try:
        with open(f'/proc/{pid}/task/{tid}/comm') as comm:
            return f'{comm.read().strip()}/{tid}'
    except OSError:
        return str(tid)


def point_row(**fields: Any) -> dict[str, Any]:
    """The JSON line of a point: its fields, the summary and which targets it meets."""
    row = dict(fields)
    row['targets'] = against_targets(row)
    return row


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary table: one line per point."""
    head = ('path', 'weights', 'guided', 'robots', 'p50 s', 'p99 s', 'ttft p50', 'answers/s', 'fair dev',
            'errors', 'busiest thread', 'gpu %', 'targets')
    lines = [' | '.join(head), ' | '.join('---' for _ in head)]
    for row in rows:
        if row.get('skipped'):
            lines.append(f"{row['path']} | {row['weights']} | | | skipped: {row['skipped']}")
            continue
        host = row.get('host') or {}
        threads = host.get('busiest_threads') or [('', 0.0)]
        failed = [k for k, ok in row['targets'].items() if not ok]
        lines.append(' | '.join(str(v) for v in (
            row['path'], row['weights'], 'yes' if row['guided'] else 'no', row['robots'], row['p50_s'], row['p99_s'],
            row['first_token_p50_s'], row['answers_per_s'], row['fairness']['worst_deviation'],
            sum(row['errors'].values()), f'{threads[0][0]} {threads[0][1]}', host.get('gpu_util_mean'),
            ('missed ' + ', '.join(failed)) if failed else ('met' if row['targets'] else ''))))
    return '\n'.join(lines)


def levers_dict(levers: Levers) -> dict[str, Any]:
    return asdict(levers)
