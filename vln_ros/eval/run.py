"""`make eval`: seeded episodes in the simulator through the real stack, scored as navigation is scored.

    vln_eval [--episodes 20] [--first-seed 0] [--latency 0.5] [--out eval_out]
             [--backend oracle|lmdeploy|openai] [--model M] [--param name:=value] [--oracle name:=value]
             [--no-compensation] [--baseline] [--study latency|faults|safety] [--speed 1.0]
             [--safety-episodes 0.5:20,2:10] [--worlds empty,clutter,people] [--models oracle,drifting,mirrored]
             [--guard on,off] [--latencies 0.2,...,8] [--modes compensation,...] [--faults none,...] [--robots N]
             [--shape api|engine]
    vln_eval --tables eval_out/results.json     (the markdown tables of a finished run, as docs/eval.md has them)
    vln_eval --merge OUT RUN [RUN ...] [--rescore]  (runs made in pieces, put together: eval/merge.py)
    vln_eval --study S --jobs N                 (a study as shards, N vln_eval processes at once, then merged)

sim_node (a quadruped in generated indoor scenes, on simulated time) and camera_node, inference_node and
controller_node, each its own process (vln_ros/eval/stack.py), in a private ROS domain nobody else on this
machine is in. The model is the oracle (the simulator's ground truth: what a perfect model would answer,
after --latency simulated seconds) unless --backend names a real one. Prints a line per episode and a
table; writes <out>/results.json (every episode and the summary), <out>/tables.md (its tables with the date,
machine and command that made them: what docs/eval.md pastes), <out>/paths.png (every episode's path
from above), <out>/episodes/seed_N.png, <out>/video_seed_N.mp4 (the first episode from the robot's camera,
the plan drawn in) and each process's log under <out>/logs/.

--study latency: the same episodes at model latencies 0.2-8 s with latency compensation on and off and the
seed system's rule (vln_ros/eval/baseline.py); --study faults: answer faults (malformed, mirrored,
premature 'arrived', with and without arrived_confirmations 2, drift into a wall, 'forward' while blocked) and
faults in the loop (inference node killed, camera frozen, odometry lost); --study safety (eval/safety.py): the
collision guard on and off x worlds {empty, clutter, people} x models {oracle, drifting, mirrored} at 0.5 s
and 2 s latency (--safety-episodes, --worlds, --models and --guard choose fewer; --latencies and --modes, and
--faults, do the same for the other two). --jobs N runs any study as shards of at most 5 seeds of one row, N
processes at once, and merges them (eval/merge.py): the same tables as one process, in less time where there
are cores.
--robots N (make eval ROBOTS=N): N robots in one world (namespaces r1..rN, a queue on the scene's route, each
with a goal of its own: vln_ros/sim/fleet.py), each with its own camera_node, inference_node and controller_node;
an episode row per robot, success per robot, and contacts between robots counted apart (robot coll.).
--shape engine: the robots' inference_nodes are ONE, in the root, serving every namespace through one backend
(fleet.launch.py's shape engine; the oracle still answers each robot from its own ground truth).
Exit code 0 when every episode ran and no velocity command broke the limits; 1 otherwise; 2 when it could
not start.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from vln_ros.core.config import ControllerParams
from vln_ros.eval import metrics, safety
from vln_ros.eval.stack import EvalOptions, EvalStack
from vln_ros.harness.run_setup import begin_run
from vln_ros.sim import fleet
from vln_ros.sim.params import MAX_ROBOTS

LATENCIES_S = (0.2, 0.5, 1.0, 2.0, 5.0, 8.0)
MODES = ('compensation', 'no_compensation', 'baseline')
# --faults name: (table label, oracle settings, inference_node parameters)
ANSWER_FAULTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    'none': ('no faults', (), ()),
    'malformed': ('malformed 20 %', ('fault_malformed:=0.2',), ()),
    'mirrored': ('mirrored 20 %', ('fault_wrong_direction:=0.2',), ()),
    'premature_arrived': ("premature 'arrived' 10 %", ('fault_premature_arrived:=0.1',), ()),
    'premature_arrived_confirmed': ("premature 'arrived' 10 %, confirmed twice", ('fault_premature_arrived:=0.1',),
                                    ('arrived_confirmations:=2',)),
    'drift': ('drift into a wall 20 %', ('fault_drift:=0.2',), ()),
    'forward_blocked': ("'forward' while blocked 50 %", ('fault_forward_blocked:=0.5',), ())}
LOOP_FAULTS = ('kill_inference', 'freeze_camera', 'lose_odom')   # injected by the harness; the label is the name
FAULTS = (*ANSWER_FAULTS, *LOOP_FAULTS)
DECEL_MARGIN_S = 0.5    # the stop bound's slack for discovery and the last messages in flight


def mode_options(options: EvalOptions, mode: str) -> EvalOptions:
    if mode == 'baseline':
        return replace(options, controller='baseline')
    return replace(options, latency_compensation=mode == 'compensation', controller='vln')


def chosen(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """A comma-separated choice among `allowed`, in the order given; ValueError naming what is unknown."""
    names = [v.strip() for v in value.split(',') if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"{option} {value!r}: {', '.join(unknown) or 'nothing chosen'} "
                         f"not among {', '.join(allowed)}")
    return names


def parse_latencies(value: str) -> list[float]:
    """--latencies: positive, finite seconds; ValueError naming the bad item."""
    out = []
    for item in value.split(','):
        try:
            latency = float(item)
        except ValueError:
            raise ValueError(f'--latencies {value!r}: {item!r} is not a number of seconds') from None
        if not (math.isfinite(latency) and latency > 0):
            raise ValueError(f'--latencies {value!r}: {item!r} must be a positive number of seconds')
        out.append(latency)
    return out


def stop_bound_s(fault: str, p: ControllerParams) -> float:
    """How long after a fault in the loop the robot must stand still: the controller's timeout for that
    silence, plus braking from full speed."""
    timeout = p.odom_timeout_s if fault == 'lose_odom' else p.inference_timeout_s
    return timeout + p.max_linear_x / p.max_decel_x + DECEL_MARGIN_S


def fault_outcome(record: metrics.EpisodeRecord, bound_s: float) -> dict[str, Any]:
    """When the robot stood still for good after the fault, and what it touched meanwhile."""
    at = record.faults['at_s']
    after = [row for row in record.trajectory if row[0] >= at]
    moving = [row[0] for row in after if math.hypot(row[4], row[5]) >= metrics.STILL_MPS
              or abs(row[6]) >= metrics.STILL_RADPS]
    stopped_after = (moving[-1] - at) if moving else 0.0
    travelled = sum(math.hypot(b[1] - a[1], b[2] - a[2]) for a, b in zip(after, after[1:], strict=False))
    speed_at_fault = math.hypot(after[0][4], after[0][5]) if after else 0.0
    return {'fault': record.faults['fault'], 'speed_at_fault_mps': speed_at_fault,
            'stopped_after_s': stopped_after, 'bound_s': bound_s,
            'within_bound': stopped_after <= bound_s, 'travelled_after_m': travelled,
            'collisions': record.collisions}


def run_set(options: EvalOptions, seeds: list[int], out: Path, label: str, fault: str = '',
            quiet: bool = False) -> tuple[list[metrics.EpisodeRecord], list[dict[str, Any]]]:
    """One configuration over seeds: the stack started once, an episode per seed."""
    records, scores = [], []
    with EvalStack(options, out / 'logs' / label.replace(' ', '_').replace("'", '')) as stack:
        stack.start()
        for i, seed in enumerate(seeds):
            episode = stack.run_fleet_episode(seed) if options.robots > 1 else [stack.run_episode(seed, fault=fault)]
            for record in episode:
                result = metrics.score(record, stack.limits)
                if fault:
                    result['fault_outcome'] = fault_outcome(record, stop_bound_s(fault, stack.controller))
                records.append(record)
                scores.append(result)
                if not quiet:
                    print(progress_line(label, i + 1, len(seeds), result), flush=True)
    return records, scores


def progress_line(label: str, done: int, total: int, r: dict[str, Any]) -> str:
    verdict = 'success' if r['success'] else r['end_state']
    robot = f" {r['robot']}" if r.get('robot') else ''
    line = (f"[{label} {done}/{total}] seed {r['seed']}{robot} ({r['kind']}, {r['language']}): {verdict}, "
            f"error {r['navigation_error_m']:.2f} m, SPL {r['spl']:.2f}, {r['episode_time_s']:.1f} s, "
            f"collisions {r['collisions']}, waiting {100 * r['waiting_ratio']:.0f} %, "
            f"keyframe->plan {r['keyframe_to_plan_s_p50']:.2f} s, RTF {r['real_time_factor']:.2f}")
    if 'fault_outcome' in r:
        f = r['fault_outcome']
        line += (f"; {f['fault']}: still {f['stopped_after_s']:.1f} s after it (bound {f['bound_s']:.1f} s), "
                 f"{f['travelled_after_m']:.2f} m travelled")
    return line


# (summary key, title, format); 'rate' formats a rate with its Wilson 95 % interval: 85 % [64, 95]
COLUMNS = (('episodes', 'n', '{:d}'), ('sr', 'SR %', 'rate'), ('sr_3m', 'SR 3 m %', 'rate'), ('os', 'OS %', 'rate'),
           ('spl', 'SPL', '{:.2f}'), ('navigation_error_m', 'NE m', '{:.2f}'),
           ('navigation_error_geodesic_m', 'NE geo m', '{:.2f}'), ('ndtw', 'nDTW', '{:.2f}'),
           ('time_to_goal_s', 'time s', '{:.1f}'),
           ('collisions', 'coll.', '{:d}'), ('collision_rate', 'coll. ep. %', 'rate'),
           ('waiting_ratio', 'waiting', '{:.1%}'),
           ('stop_and_go', 'stop&go', '{:.1f}'), ('plan_age_s_p50', 'plan age p50 s', '{:.2f}'),
           ('plan_age_s_p99', 'p99 s', '{:.2f}'), ('keyframe_to_plan_s_p50', 'kf->plan s', '{:.2f}'),
           ('limit_violations', 'limit viol.', '{:d}'), ('real_time_factor_min', 'RTF min', '{:.2f}'))
FLEET_COLUMNS = (*COLUMNS, ('robot_collisions', 'robot coll.', '{:d}'), ('cross_talk', 'cross talk', '{:d}'))
FAMILY_COLUMNS = tuple(c for c in COLUMNS if c[0] in (
    'episodes', 'sr', 'sr_3m', 'os', 'spl', 'navigation_error_geodesic_m', 'ndtw', 'time_to_goal_s', 'collision_rate'))
TABLE_NOTE = ('SR: stopped (the model said arrived) within 1 m of the goal, SR 3 m: within 3 m, OS: came within 1 m '
              'at any time; [a, b]: Wilson 95 % interval; NE geo: navigation error along the geodesic; nDTW: '
              'd_th 3 m; coll. ep.: episodes with a collision')


def _cell(s: dict[str, Any], key: str, fmt: str) -> str:
    value = s.get(key, math.nan)
    if isinstance(value, float) and not math.isfinite(value):
        return '-'
    if fmt == 'rate':
        low, high = s.get(f'{key}_ci95', (math.nan, math.nan))
        interval = f' [{100 * low:.0f}, {100 * high:.0f}]' if math.isfinite(low) and math.isfinite(high) else ''
        return f'{100 * value:.0f} %{interval}'
    return fmt.format(value)


def table(rows: list[tuple[str, dict[str, Any]]], columns: tuple[tuple[str, str, str], ...] = COLUMNS,
          first: str = 'run') -> str:
    """Markdown table: one row per configuration (or per instruction family: first='family')."""
    head = f'| {first} | ' + ' | '.join(title for _, title, _ in columns) + ' |'
    lines = [head, '|' + '---|' * (len(columns) + 1)]
    for label, s in rows:
        lines.append(f'| {label} | ' + ' | '.join(_cell(s, key, fmt) for key, _, fmt in columns) + ' |')
    return '\n'.join(lines)


def episode_table(scores: list[dict[str, Any]]) -> str:
    """Markdown: a row per robot per episode (several robots in one world)."""
    lines = ['| seed | robot | result | NE m | SPL | time s | coll. | robot coll. | kf->plan s |', '|' + '---|' * 9]
    for r in scores:
        verdict = 'success' if r['success'] else r['end_state']
        lines.append(f"| {r['seed']} | {r.get('robot', '') or '-'} | {verdict} | {r['navigation_error_m']:.2f} | "
                     f"{r['spl']:.2f} | {r['episode_time_s']:.1f} | {r['collisions']} | "
                     f"{r.get('robot_collisions', 0)} | {r['keyframe_to_plan_s_p50']:.2f} |")
    return '\n'.join(lines)


def run_label(options: EvalOptions, reported: str = '') -> str:
    """A run's name in tables: the oracle by its simulated latency, a real backend by its model (its latency is
    what the model took, wall-clock, and is measured, not chosen): the name its plans carried (reported), else
    the one it was asked for."""
    if options.backend == 'oracle':
        name = f'oracle {options.latency_s:g}s'
    else:
        params = dict(item.split(':=', 1) for item in options.inference_params)
        model = reported or options.model or params.get(f'{options.backend}.served_model', '') or 'served model'
        name = f'{options.backend} {Path(model).name or model}'
    return name + (' baseline' if options.controller == 'baseline' else '') + \
        ('' if options.latency_compensation else ' no compensation') + \
        (f', {options.robots} robots' if options.robots > 1 else '') + \
        (', one inference_node for all' if options.shape == 'engine' else '')


def reported_model(records: list[metrics.EpisodeRecord]) -> str:
    """The model the plans named (WaypointArray.model), most often first; '' when no plan named one."""
    names = Counter(p.model for r in records for p in r.plans if p.model)
    return names.most_common(1)[0][0] if names else ''


def provenance(argv: list[str]) -> dict[str, str]:
    """When, where and by what command a run was made: printed beside every table made from it."""
    load_1min = os.getloadavg()[0]
    return {'date': datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'),
            'machine': f'{platform.machine()}, {os.cpu_count()} cores, load {load_1min:.1f} at the start',
            'command': shlex.join(['vln_eval', *argv])}


def markdown(results: dict[str, Any]) -> str:
    """Every table of a run's results.json in markdown, with what made it: the one renderer for run output
    (tables.md) and docs/eval.md, so the docs cannot drift from a run by hand."""
    made = results.get('made', {})
    rows = [(run['label'], run['summary']) for run in results['runs']]
    seeds = results['seeds']   # a safety study's rows each run their own number: a sentence says so
    if isinstance(seeds, str):
        episodes = f'seeds {seeds}'
    elif seeds == list(range(seeds[0], seeds[-1] + 1)):
        episodes = f'{len(seeds)} episodes per run (seeds {seeds[0]}-{seeds[-1]})'
    else:   # a fleet's, with the seeds whose routes are too short for it passed over
        episodes = f'{len(seeds)} episodes per run (seeds {", ".join(map(str, seeds))})'
    if results.get('seeds_passed_over'):
        passed = ', '.join(map(str, results['seeds_passed_over']))
        episodes += f' (passed over, routes too short for the robots: {passed})'
    parts = [f"{made.get('date', '?')}, {made.get('machine', '?')}: `{made.get('command', '?')}`, {episodes}, "
             f"{results.get('wall_s', math.nan):.0f} s", '', table(rows), '', TABLE_NOTE]
    if 'safety_table' in results:
        parts += ['', 'Safety:', '', results['safety_table']]
    for run in results['runs']:
        parts += ['', f"By instruction family ({run['label']}):", '',
                  table(list(run['by_family'].items()), FAMILY_COLUMNS, 'family')]
    return '\n'.join(parts) + '\n'


def _plain(record: metrics.EpisodeRecord) -> dict[str, Any]:
    data = asdict(record)
    data['plans'] = [asdict(p) for p in record.plans]
    return data


def plain_options(options: EvalOptions) -> dict[str, str]:
    """A run's options as results.json keeps them (and eval/merge.py compares them)."""
    return {k: str(v) for k, v in asdict(options).items()}


def run_entry(label: str, options: dict[str, str], records: list[metrics.EpisodeRecord],
              scores: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One run as results.json keeps it: its summary, families and episodes (a run's and a merge's, alike)."""
    summary = metrics.summarise(scores)
    by_family = metrics.summarise_by(scores, 'kind')
    episodes = [{'score': s, 'record': _plain(r)} for r, s in zip(records, scores, strict=True)]
    return {'label': label, 'options': options, 'summary': summary, 'by_family': by_family,
            'family_table': table(list(by_family.items()), FAMILY_COLUMNS, 'family'), 'episodes': episodes, **extra}


def write_pictures(out: Path, records: list[metrics.EpisodeRecord], scores: list[dict[str, Any]],
                   video_seed: int | None) -> list[Path]:
    from vln_ros.eval import pictures
    from vln_ros.sim.render import CameraSpec
    written = []
    (out / 'episodes').mkdir(parents=True, exist_ok=True)
    for record, result in zip(records, scores, strict=True):
        image = pictures.top_down(record, result)
        path = out / 'episodes' / (f'seed_{record.seed}' + (f'_{record.robot}' if record.robot else '') + '.png')
        cv2.imwrite(str(path), image)
    if records:
        cv2.imwrite(str(out / 'paths.png'), pictures.paths_sheet(records, scores).image)
        written.append(out / 'paths.png')
    chosen = next((r for r in records if r.seed == video_seed), records[0] if records else None)
    if chosen is not None:
        path = out / f'video_seed_{chosen.seed}.mp4'
        pictures.video(chosen, path, CameraSpec())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print('vln_eval: interrupted; the stack was stopped', file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--episodes', type=int, default=20, help='episodes per configuration (default 20)')
    parser.add_argument('--first-seed', type=int, default=0, help='scene seeds are first-seed, first-seed+1, ...')
    parser.add_argument('--latency', type=float, default=0.5, help="the oracle's latency [s, simulated] (0.5)")
    parser.add_argument('--backend', choices=('oracle', 'lmdeploy', 'openai'), default='oracle')
    parser.add_argument('--model', default='', help='lmdeploy: weights folder; openai: served model name')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='another inference_node parameter, e.g. openai.base_url:=http://gpu:23333/v1')
    parser.add_argument('--oracle', action='append', default=[], metavar='NAME:=VALUE',
                        help='an oracle setting: noise_m, noise_deg, fault_malformed, fault_wrong_direction, '
                             'fault_premature_arrived')
    parser.add_argument('--sim', action='append', default=[], metavar='NAME:=VALUE',
                        help='a sim_node parameter, e.g. camera.rate_hz:=5.0 or odom.scale_error:=0.05')
    parser.add_argument('--no-compensation', action='store_true', help='controller without latency compensation')
    parser.add_argument('--baseline', action='store_true', help="the seed system's rule instead of controller_node")
    parser.add_argument('--study', choices=('latency', 'faults', 'safety'),
                        help='run a study instead of one configuration')
    parser.add_argument('--latencies', default=','.join(map(str, LATENCIES_S)), help='--study latency: [s] list')
    parser.add_argument('--modes', default=','.join(MODES), help=f"--study latency: controllers ({', '.join(MODES)})")
    parser.add_argument('--faults', default=','.join(FAULTS), help=f"--study faults: rows ({', '.join(FAULTS)})")
    parser.add_argument('--safety-episodes', default=','.join(f'{lat:g}:{n}' for lat, n in safety.LATENCY_EPISODES),
                        help='--study safety: LATENCY_S:EPISODES per latency (default: the issue\'s 0.5:20,2:10)')
    parser.add_argument('--worlds', default=','.join(safety.WORLDS), help='--study safety: worlds to run')
    parser.add_argument('--models', default=','.join(safety.MODELS), help='--study safety: models to run')
    parser.add_argument('--guard', default=','.join(safety.GUARD), help='--study safety: on, off or on,off')
    parser.add_argument('--speed', type=float, default=1.0, help='simulated seconds per wall second (default 1)')
    parser.add_argument('--robots', type=int, default=1,
                        help='robots in one world, namespaces r1..rN, each with its own stack (default 1)')
    parser.add_argument('--shape', choices=('api', 'engine'), default='api',
                        help='--robots: an inference_node per robot (api, default) or one serving them all (engine)')
    parser.add_argument('--video-seed', type=int, default=None, help='the episode made into a video (the first)')
    parser.add_argument('--out', type=Path, default=Path('eval_out'), help='output folder (default eval_out)')
    parser.add_argument('--tables', type=Path, metavar='RESULTS_JSON',
                        help="print a finished run's tables in markdown (what docs/eval.md has) and exit")
    parser.add_argument('--merge', nargs='+', type=Path, metavar=('OUT', 'RUN'),
                        help='merge runs (their folders or results.json: shards of one study) into OUT and exit')
    parser.add_argument('--rescore', action='store_true',
                        help='--merge: score every episode again with this version\'s metrics (a measure fixed later)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='--study: run it as shards, this many vln_eval processes at once (default 1)')
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.merge:
        from vln_ros.eval import merge
        if len(args.merge) < 2:
            parser.error('--merge OUT RUN [RUN ...]: at least one run to merge')
        return merge.merge_main(args.merge[0], args.merge[1:], provenance(argv), rescore=args.rescore)
    if args.tables:
        try:
            print(markdown(json.loads(args.tables.read_text())), end='')
        except (OSError, ValueError, KeyError) as exc:
            print(f'vln_eval: cannot read the tables of {args.tables}: {exc!r}', file=sys.stderr)
            return 2
        return 0
    for item in (*args.param, *args.oracle, *args.sim):
        if ':=' not in item:
            parser.error(f'{item!r}: expected NAME:=VALUE')
    if args.episodes < 1:
        parser.error('--episodes must be at least 1')
    if args.backend != 'oracle' and args.study:
        parser.error('studies use the oracle (they vary its latency and faults)')
    if not 1 <= args.robots <= MAX_ROBOTS:
        parser.error(f'--robots {args.robots}: from 1 to {MAX_ROBOTS}')
    if args.robots > 1 and (args.study or args.baseline):
        parser.error(f'--robots {args.robots}: one configuration of the stack only (no --study, no --baseline)')
    if args.shape == 'engine' and args.robots < 2:
        parser.error('--shape engine: one inference_node serving several robots needs --robots 2 or more')
    if args.backend != 'oracle' and args.speed != 1.0:
        parser.error(f'--speed {args.speed:g}: a real backend runs at --speed 1 only (its latency is wall-clock: '
                     'a faster simulation would make the model look slower by that factor)')
    try:
        latencies = parse_latencies(args.latencies)
        modes = chosen(args.modes, MODES, '--modes')
        faults = chosen(args.faults, FAULTS, '--faults')
        safety_rows = safety.rows(args.worlds.split(','), args.models.split(','), args.guard.split(','),
                                  safety.parse_latency_episodes(args.safety_episodes))
    except ValueError as exc:
        parser.error(str(exc))
    options = EvalOptions(backend=args.backend, model=args.model, latency_s=args.latency,
                          oracle=tuple(args.oracle), inference_params=tuple(args.param), sim_params=tuple(args.sim),
                          speed=args.speed, latency_compensation=not args.no_compensation,
                          controller='baseline' if args.baseline else 'vln', robots=args.robots,
                          shape=args.shape)
    if args.jobs != 1:
        if args.jobs < 1 or not args.study:
            parser.error(f'--jobs {args.jobs}: at least 1, and with a --study only')
        from vln_ros.eval import merge
        passed = [f'--speed={args.speed}', *(f'--{name}={item}' for name in ('oracle', 'sim', 'param')
                                             for item in getattr(args, name)),
                  *(['--no-compensation'] if args.no_compensation else [])]
        if args.study == 'safety':
            todo = merge.safety_shards([r for r in safety_rows if safety.available(r.world)], args.first_seed)
        elif args.study == 'latency':
            todo = merge.latency_shards(latencies, modes, args.episodes, args.first_seed)
        else:
            todo = merge.fault_shards(faults, args.episodes, args.first_seed)
        return merge.jobs_main(args.out, todo, args.jobs, merge.child_command(passed), provenance(argv))
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    passed_over: list[int] = []
    if args.robots > 1:   # a queue of robots needs a long enough route: the first seeds with one (sim/fleet.py)
        try:
            seeds, passed_over = fleet.seeds_that_fit(args.robots, args.first_seed, args.episodes)
        except ValueError as exc:
            parser.error(f'--robots {args.robots}: {exc}')
    if begin_run('vln_eval', args.out) is None:
        return 2
    if passed_over:
        print(f'vln_eval: seeds {", ".join(map(str, passed_over))} passed over: their routes are too short for '
              f'{args.robots} robots in a queue', file=sys.stderr, flush=True)
    began = time.monotonic()
    rows: list[tuple[str, dict[str, Any]]] = []
    results: dict[str, Any] = {'seeds': seeds, 'backend': args.backend, 'made': provenance(argv), 'runs': [],
                               **({'seeds_passed_over': passed_over} if passed_over else {})}
    pictured: tuple[list[metrics.EpisodeRecord], list[dict[str, Any]]] | None = None

    def record_run(label: str, run_options: EvalOptions, records: list[metrics.EpisodeRecord],
                   scores: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        entry = run_entry(label, plain_options(run_options), records, scores, **extra)
        summary: dict[str, Any] = entry['summary']
        rows.append((label, summary))
        results['runs'].append(entry)
        results['table'] = table(rows)
        results['table_note'] = TABLE_NOTE
        results['wall_s'] = time.monotonic() - began
        # after every run: an interrupted study keeps what it has measured
        (args.out / 'results.json').write_text(json.dumps(results, indent=1, default=str))
        (args.out / 'tables.md').write_text(markdown(results))
        return summary

    if args.study == 'latency':
        study_rows = []
        for latency in latencies:
            for mode in modes:
                run_options = replace(mode_options(options, mode), latency_s=latency)
                label = f'{mode} {latency:g}s'
                records, scores = run_set(run_options, seeds, args.out, label)
                summary = record_run(label, run_options, records, scores, mode=mode, latency_s=latency)
                study_rows.append({'mode': mode, 'latency_s': latency, **summary})
        from vln_ros.eval import pictures
        pictures.study_plot(args.out / 'study_latency.png', study_rows,
                            f'{len(seeds)} episodes per point, oracle model, simulated latency')
    elif args.study == 'safety':
        def safety_set(run_options: EvalOptions, row_seeds: list[int], label: str) -> tuple[
                list[metrics.EpisodeRecord], list[dict[str, Any]]]:
            return run_set(run_options, row_seeds, args.out, label)

        def safety_row(result: safety.RowResult, run_options: EvalOptions) -> None:
            record_run(result.row.label, run_options, result.records, result.scores,
                       safety={**asdict(result.row), **result.summary()})
            results['safety_table'] = safety.table(safety_results + [result])
            results['safety_figures'] = safety.figures(safety_results + [result])

        missing = sorted({r.world for r in safety_rows if not safety.available(r.world)})
        if missing:
            print(f"vln_eval: not run: the worlds {', '.join(missing)} (this simulator's reset has no people or "
                  'clutter)', file=sys.stderr)
            results['safety_not_run'] = missing
        safety_rows = [r for r in safety_rows if safety.available(r.world)]
        safety_results: list[safety.RowResult] = []
        results['seeds'] = f'{args.first_seed} onwards, as many as each row runs'   # before tables.md is first written
        for row in safety_rows:   # one at a time, so results.json has each row as soon as it ran
            safety_results += safety.run_study(options, [row], args.first_seed, safety_set, safety_row)
        (args.out / 'results.json').write_text(json.dumps(results, indent=1, default=str))
        (args.out / 'tables.md').write_text(markdown(results))
        written = safety.write_pictures(args.out, safety_results)
        print('\n' + results['safety_table'] + '\n\n' + json.dumps(results['safety_figures']))
        print(f"pictures: {', '.join(str(p) for p in written)}")
    elif args.study == 'faults':
        for fault in faults:
            if fault in LOOP_FAULTS:
                records, scores = run_set(options, seeds, args.out, fault, fault=fault)
                record_run(fault, options, records, scores, loop_faults=[s['fault_outcome'] for s in scores])
                continue
            label, settings, inference = ANSWER_FAULTS[fault]
            run_options = replace(options, oracle=options.oracle + settings,
                                  inference_params=options.inference_params + inference)
            records, scores = run_set(run_options, seeds, args.out, label)
            record_run(label, run_options, records, scores)
    else:
        label = run_label(options)
        records, scores = run_set(options, seeds, args.out, label)
        label = run_label(options, reported_model(records))    # the name the model's plans carried
        if options.robots > 1:   # a row per robot besides the run's: the fleet's success, robot by robot
            by_robot = metrics.summarise_by(scores, 'robot')
            results['robot_table'] = table(list(by_robot.items()), FLEET_COLUMNS, 'robot')
            results['episode_table'] = episode_table(scores)
        record_run(label, options, records, scores)
        pictured = (records, scores)

    written = write_pictures(args.out, *pictured, args.video_seed) if pictured else []
    print('\n' + results['table'] + '\n\n' + TABLE_NOTE)
    if 'robot_table' in results:
        print('\nby robot:\n' + results['robot_table'] + '\n\nepisodes:\n' + results['episode_table'])
    if not args.study:    # a study's runs keep theirs in results.json
        print(f"\nby instruction family ({results['runs'][-1]['label']}):\n" + results['runs'][-1]['family_table'])
    per_run = 'as many episodes per run as the table says' if args.study == 'safety' else \
        f'{len(seeds)} episodes per run'
    print(f"\n{per_run} in {results['wall_s']:.0f} s; results: {args.out / 'results.json'}"
          + (f"; pictures: {', '.join(str(p) for p in written)}" if written else ''))
    violations = sum(s['limit_violations'] for _, s in rows)
    if violations:
        print(f'vln_eval: FAILED: {violations} velocity commands outside the limits', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
