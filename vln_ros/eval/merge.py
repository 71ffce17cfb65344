"""`vln_eval --merge OUT RUN...` and `vln_eval --study S --jobs N`: runs made in pieces, put together.

A shard is an ordinary vln_eval run over one row of a study (safety, latency or faults) and a block of seeds,
with its own results.json. merge() reads several (finished or interrupted), groups their runs by label, refuses
runs of one label made with different options or the same seed twice, orders each label's episodes by seed and
rebuilds every table, figure and picture from the merged episodes, as one run over all of them would have
(run.py's run_entry and safety.py's functions).
run_shards() runs shards as child vln_eval processes, at most N at once, each with its own --out and log.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any

from vln_ros.eval import metrics, safety

SHARD_EPISODES = 5          # seeds per shard at most: short shards balance the pool's work
STOP_GRACE_S = 30.0         # a child stops its stack on SIGINT; one still running after this is killed


class MergeError(ValueError):
    """Runs that cannot be merged (different options, a seed twice, an unreadable file): the message says which."""


def record_from_plain(data: dict[str, Any]) -> metrics.EpisodeRecord:
    """The inverse of run.py's _plain: an EpisodeRecord (with its Plan objects) from results.json. Fields a
    newer writer added are ignored, fields an older one lacked take their defaults."""
    known = {f.name for f in fields(metrics.EpisodeRecord)}
    plan_fields = {f.name for f in fields(metrics.Plan)}
    values = {k: v for k, v in data.items() if k in known}
    values['plans'] = [metrics.Plan(**{k: v for k, v in p.items() if k in plan_fields})
                       for p in data.get('plans', [])]
    return metrics.EpisodeRecord(**values)


def results_path(path: Path) -> Path:
    """A run's folder or its results.json -> its results.json."""
    return path / 'results.json' if path.is_dir() else path


def load(path: Path) -> dict[str, Any]:
    file = results_path(path)
    try:
        data: dict[str, Any] = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise MergeError(f'cannot read {file}: {exc}') from None
    if not isinstance(data.get('runs'), list):
        raise MergeError(f"{file}: no 'runs' list (not a vln_eval results.json)")
    return data


@dataclass
class _Label:
    """Everything merged so far under one label."""

    options: dict[str, str]
    source: Path
    extra: dict[str, Any]
    episodes: dict[tuple[int, str], tuple[dict[str, Any], Path]]   # (seed, robot) -> (episode, its file)


_SUMMED_EXTRA = ('safety', 'loop_faults')   # rebuilt from the episodes, not copied from one input


def _seed_ranges(seeds: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    blocks: list[list[int]] = []
    for seed in sorted(set(seeds)):
        if blocks and seed == blocks[-1][1] + 1:
            blocks[-1][1] = seed
        else:
            blocks.append([seed, seed])
    return ', '.join(f'{a}' if a == b else f'{a}-{b}' for a, b in blocks) or 'none'


def _safety_key(row: safety.Row) -> tuple[float, int, int, int]:
    """safety.rows() order: latency, world, model, guard on before off."""
    return (row.latency_s, list(safety.WORLDS).index(row.world), list(safety.MODELS).index(row.model),
            0 if row.guard else 1)


def run_limits(options: dict[str, str]) -> dict[str, float]:
    """The velocity limits a run was scored against: its parameter file's, or this checkout's where that file is
    not here (a run made elsewhere)."""
    from vln_ros.core.limits import VelocityLimits
    from vln_ros.eval.stack import EvalOptions, controller_params
    params_file = Path(options.get('params_file', ''))
    if not params_file.is_file():
        params_file = EvalOptions().params_file
    return VelocityLimits.of(controller_params(params_file)).as_dict()


def rescored(record: metrics.EpisodeRecord, old: dict[str, Any], limits: dict[str, float]) -> dict[str, Any]:
    """The episode scored again by this code's metrics (a measure fixed or added after the run). What only the
    harness knew at the time (an in-loop fault's outcome) is kept."""
    return {**old, **metrics.score(record, limits)}


def merge(inputs: Sequence[Path], made: dict[str, Any], rescore: bool = False) -> tuple[
        dict[str, Any], list[safety.RowResult], list[tuple[list[metrics.EpisodeRecord], list[dict[str, Any]]]]]:
    """The results.json of one run over every input's episodes, the safety rows (empty when no input was a safety
    study) and each plain run's (records, scores) for its pictures; rescore: every episode scored again
    (rescored()). MergeError naming the files and the option or seed when the inputs do not fit together."""
    from vln_ros.eval import run
    labels: dict[str, _Label] = {}
    backend = ''
    not_run: set[str] = set()
    for path in inputs:
        data = load(path)
        file = results_path(path)
        backend = backend or str(data.get('backend', ''))
        not_run.update(data.get('safety_not_run', []))
        for entry in data['runs']:
            label = entry['label']
            have = labels.get(label)
            if have is None:
                extra = {k: v for k, v in entry.items() if k not in (
                    'label', 'options', 'summary', 'by_family', 'family_table', 'episodes', 'seeds', *_SUMMED_EXTRA)}
                if 'safety' in entry:
                    extra['safety'] = entry['safety']
                have = labels[label] = _Label(entry['options'], file, extra, {})
            elif entry['options'] != have.options:
                name = next(k for k in sorted(set(have.options) | set(entry['options']))
                            if have.options.get(k) != entry['options'].get(k))
                raise MergeError(f"{label!r}: {have.source} and {file} differ in option {name!r} "
                                 f"({have.options.get(name)!r} vs {entry['options'].get(name)!r})")
            for episode in entry['episodes']:
                key = (int(episode['record']['seed']), str(episode['record'].get('robot', '')))
                if key in have.episodes:
                    robot = f' robot {key[1]}' if key[1] else ''
                    raise MergeError(f'{label!r}: seed {key[0]}{robot} is in both {have.episodes[key][1]} '
                                     f'and {file}')
                have.episodes[key] = (episode, file)

    results: dict[str, Any] = {'backend': backend, 'made': made, 'runs': []}
    rows: list[tuple[str, dict[str, Any]]] = []
    safety_results: list[safety.RowResult] = []
    pictured: list[tuple[list[metrics.EpisodeRecord], list[dict[str, Any]]]] = []
    row_seeds: dict[str, list[int]] = {}
    merged: list[tuple[str, _Label, list[metrics.EpisodeRecord], list[dict[str, Any]]]] = []
    for label, have in labels.items():
        ordered = [have.episodes[k][0] for k in sorted(have.episodes)]
        records = [record_from_plain(e['record']) for e in ordered]
        scores = [e['score'] for e in ordered]
        if rescore:   # the parameter file read once per run, not once per episode
            limits = run_limits(have.options)
            scores = [rescored(r, s, limits) for r, s in zip(records, scores, strict=True)]
        merged.append((label, have, records, scores))
    if merged and all('safety' in m[1].extra for m in merged):   # safety.rows() order, whatever the shards' order
        merged.sort(key=lambda m: _safety_key(_safety_row(m[1].extra['safety'], len(m[2]))))
    for label, have, records, scores in merged:
        extra = dict(have.extra)
        seeds = sorted({r.seed for r in records})
        row_seeds[label] = seeds
        if 'safety' in extra:
            result = safety.RowResult(_safety_row(extra['safety'], len(records)), records, scores)
            extra['safety'] = {**{f.name: getattr(result.row, f.name) for f in fields(safety.Row)},
                               **result.summary()}
            safety_results.append(result)
        elif any('fault_outcome' in s for s in scores):
            extra['loop_faults'] = [s['fault_outcome'] for s in scores]
        else:
            pictured.append((records, scores))
        entry = run.run_entry(label, have.options, records, scores, **extra, seeds=seeds)
        results['runs'].append(entry)
        rows.append((label, entry['summary']))
    if rows:
        results['table'] = run.table(rows)
        results['table_note'] = run.TABLE_NOTE
    distinct = {tuple(s) for s in row_seeds.values()}
    if len(distinct) == 1 and next(iter(distinct)):
        results['seeds'] = list(next(iter(distinct)))
    else:   # rows ran different seeds: say which, in a sentence markdown() prints as it is
        by_range: dict[str, list[str]] = {}
        for label, seeds in row_seeds.items():
            by_range.setdefault(_seed_ranges(seeds), []).append(label)
        results['seeds'] = '; '.join(f"{r} ({', '.join(ls)})" for r, ls in by_range.items())
    results['row_seeds'] = row_seeds
    results['wall_s'] = sum(float(load(p).get('wall_s', 0.0)) for p in inputs)   # the shards' time, added
    if not_run:
        results['safety_not_run'] = sorted(not_run)
    if safety_results:
        results['safety_table'] = safety.table(safety_results)
        results['safety_figures'] = safety.figures(safety_results)
    fleet = [r for r in results['runs'] if r['options'].get('robots', '1') not in ('', '1')]
    if fleet:
        scores_all = [e['score'] for e in fleet[-1]['episodes']]
        results['robot_table'] = run.table(list(metrics.summarise_by(scores_all, 'robot').items()),
                                           run.FLEET_COLUMNS, 'robot')
        results['episode_table'] = run.episode_table(scores_all)
    return results, safety_results, pictured


def _safety_row(data: dict[str, Any], episodes: int) -> safety.Row:
    """A safety row from results.json's 'safety' entry, with the episodes the merge has for it."""
    return safety.Row(bool(data['guard']), str(data['world']), str(data['model']), float(data['latency_s']), episodes)


def write(out: Path, results: dict[str, Any], safety_results: list[safety.RowResult],
          pictured: list[tuple[list[metrics.EpisodeRecord], list[dict[str, Any]]]], pictures: bool = True,
          video_seed: int | None = None) -> list[Path]:
    """OUT/results.json, OUT/tables.md and (pictures) the pictures a run of the same study would have made."""
    from vln_ros.eval import run
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(results, indent=1, default=str))
    (out / 'tables.md').write_text(run.markdown(results))
    if not pictures:
        return []
    written = safety.write_pictures(out, safety_results) if safety_results else []
    study = [{'mode': r['mode'], 'latency_s': r['latency_s'], **r['summary']} for r in results['runs']
             if 'mode' in r and 'latency_s' in r]
    if study:
        from vln_ros.eval import pictures as drawing
        n = max(s['episodes'] for s in study)
        drawing.study_plot(out / 'study_latency.png', study, f'{n} episodes per point, oracle model, simulated latency')
        written.append(out / 'study_latency.png')
    elif len(pictured) == 1 and not safety_results:   # one plain run: its sheet, episodes and video
        written += run.write_pictures(out, *pictured[0], video_seed)
    return written


def report(results: dict[str, Any], written: list[Path], out: Path) -> None:
    """Print the merged tables as a run prints its own."""
    if 'table' in results:
        print('\n' + results['table'] + '\n\n' + results['table_note'])
    if 'safety_table' in results:
        print('\n' + results['safety_table'] + '\n\n' + json.dumps(results['safety_figures']))
    if 'robot_table' in results:
        print('\nby robot:\n' + results['robot_table'] + '\n\nepisodes:\n' + results['episode_table'])
    if len(results['runs']) == 1:
        print(f"\nby instruction family ({results['runs'][0]['label']}):\n" + results['runs'][0]['family_table'])
    print(f"\nmerged {len(results['made'].get('merged', []))} runs; seeds {results['seeds']}; "
          f"results: {out / 'results.json'}" + (f"; pictures: {', '.join(map(str, written))}" if written else ''))


def merge_main(out: Path, inputs: Sequence[Path], made: dict[str, Any], pictures: bool = True,
               rescore: bool = False) -> int:
    """vln_eval --merge [--rescore]: 0 when merged and no velocity command broke the limits, 1 when one did, 2 when
    the inputs could not be merged."""
    try:
        results, safety_results, pictured = merge(inputs, {**made, 'merged': [str(results_path(p)) for p in inputs]},
                                                  rescore)
    except MergeError as exc:
        print(f'vln_eval: cannot merge: {exc}', file=sys.stderr)
        return 2
    written = write(out, results, safety_results, pictured, pictures)
    report(results, written, out)
    violations = sum(r['summary'].get('limit_violations', 0) for r in results['runs'])
    if violations:
        print(f'vln_eval: FAILED: {violations} velocity commands outside the limits', file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class Shard:
    """One row of a study over a contiguous block of seeds: one child vln_eval with these study arguments (the
    pool adds its --out)."""

    name: str
    study_args: tuple[str, ...]

    def args(self) -> list[str]:
        return list(self.study_args)


def seed_blocks(episodes: int, first_seed: int, most: int = SHARD_EPISODES) -> list[tuple[int, int]]:
    """(first seed, episodes) of contiguous blocks of at most `most`, as even as they go (12 -> 4, 4, 4)."""
    count = -(-episodes // most)
    blocks, start = [], first_seed
    for b in range(count):
        n = episodes // count + (1 if b < episodes % count else 0)
        blocks.append((start, n))
        start += n
    return blocks


def _seeds_name(first: int, n: int) -> str:
    return f'seeds_{first}-{first + n - 1}'


def safety_shards(study_rows: Sequence[safety.Row], first_seed: int) -> list[Shard]:
    """Each safety row's seeds in blocks (seed_blocks), in the rows' order."""
    return [Shard(f"{'guard' if row.guard else 'no_guard'}_{row.world}_{row.model}_{row.latency_s:g}s_"
                  f'{_seeds_name(first, n)}',
                  ('--study', 'safety', '--worlds', row.world, '--models', row.model,
                   '--guard', 'on' if row.guard else 'off', '--safety-episodes', f'{row.latency_s:g}:{n}',
                   '--first-seed', str(first)))
            for row in study_rows for first, n in seed_blocks(row.episodes, first_seed)]


def latency_shards(latencies: Sequence[float], modes: Sequence[str], episodes: int, first_seed: int) -> list[Shard]:
    """The latency study's points (latency x controller mode) in the order one process runs them, each point's
    seeds in blocks."""
    return [Shard(f'{mode}_{latency:g}s_{_seeds_name(first, n)}',
                  ('--study', 'latency', '--latencies', f'{latency:g}', '--modes', mode, '--episodes', str(n),
                   '--first-seed', str(first)))
            for latency in latencies for mode in modes for first, n in seed_blocks(episodes, first_seed)]


def fault_shards(faults: Sequence[str], episodes: int, first_seed: int) -> list[Shard]:
    """The faults study's rows (run.FAULTS names) in the order given, each row's seeds in blocks."""
    return [Shard(f'{fault}_{_seeds_name(first, n)}',
                  ('--study', 'faults', '--faults', fault, '--episodes', str(n), '--first-seed', str(first)))
            for fault in faults for first, n in seed_blocks(episodes, first_seed)]


@dataclass
class PoolResult:
    finished: list[Path]               # shard folders whose child exited 0
    failed: list[tuple[str, int, Path]]   # (shard, exit code, its log)
    peak: int                          # the most children that ran at once


def run_shards(commands: Sequence[tuple[str, list[str]]], folder: Path, jobs: int,
               poll_s: float = 0.2) -> PoolResult:
    """Run (name, argv) children at most `jobs` at a time, each with --out folder/name and its output in
    folder/name.log. Ctrl-C or SIGTERM stops every running child (SIGINT: it stops its stack; killed if it has
    not after STOP_GRACE_S) and is raised again as KeyboardInterrupt."""
    if jobs < 1:
        raise ValueError(f'jobs must be at least 1, got {jobs}')
    folder.mkdir(parents=True, exist_ok=True)
    waiting = list(commands)
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    result = PoolResult([], [], 0)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name, argv = waiting.pop(0)
                log = folder / f'{name}.log'
                with log.open('wb') as sink:
                    running[name] = (subprocess.Popen([*argv, '--out', str(folder / name)], stdout=sink,
                                                      stderr=subprocess.STDOUT), log)
                result.peak = max(result.peak, len(running))
                print(f'[shards] started {name} ({len(running)} running, {len(waiting)} waiting)', flush=True)
            for name, (child, log) in list(running.items()):
                code = child.poll()
                if code is None:
                    continue
                del running[name]
                if code == 0:
                    result.finished.append(folder / name)
                else:
                    result.failed.append((name, code, log))
                    print(f'[shards] FAILED {name} (exit {code}): see {log}', file=sys.stderr, flush=True)
                print(f'[shards] done {name}: {len(result.finished)} finished, {len(result.failed)} failed, '
                      f'{len(running)} running, {len(waiting)} waiting', flush=True)
            if running:
                time.sleep(poll_s)   # the pool's tick, not a test's wait
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(list(c for c, _ in running.values()))
    return result


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def child_command(passed: list[str]) -> Callable[[Shard], list[str]]:
    """The command of a shard's child: this Python running vln_eval with the parent's other settings."""
    return lambda shard: [sys.executable, '-m', 'vln_ros.eval.run', *passed, *shard.args()]


def jobs_main(out: Path, todo: Sequence[Shard], jobs: int, command: Callable[[Shard], list[str]],
              made: dict[str, Any], pictures: bool = True) -> int:
    """vln_eval --study S --jobs N: the study as shards under OUT/shards/, then merged into OUT. Exit 1 when a
    child failed (after merging those that wrote results) or a velocity command broke the limits."""
    began = time.monotonic()
    print(f'[shards] {len(todo)} shards of at most {SHARD_EPISODES} episodes, {jobs} at a time', flush=True)
    pool = run_shards([(s.name, command(s)) for s in todo], out / 'shards', jobs)
    have = [out / 'shards' / s.name for s in todo if (out / 'shards' / s.name / 'results.json').exists()]
    code = 0
    if have:
        try:
            results, safety_results, pictured = merge(have, {**made, 'merged': [str(results_path(p)) for p in have]})
        except MergeError as exc:
            print(f'vln_eval: cannot merge the shards: {exc}', file=sys.stderr)
            return 2
        results['wall_s'] = time.monotonic() - began
        written = write(out, results, safety_results, pictured, pictures)
        report(results, written, out)
        if sum(r['summary'].get('limit_violations', 0) for r in results['runs']):
            print('vln_eval: FAILED: velocity commands outside the limits', file=sys.stderr)
            code = 1
    for name, exit_code, log in pool.failed:
        print(f'vln_eval: shard {name} failed (exit {exit_code}): {log}', file=sys.stderr)
    return 1 if pool.failed else code
