"""`make demo`: the bundled corridor bag through the three real node processes, with a summary and pictures.

    vln_demo [--rate 1.0] [--out demo_out] [--backend replay|lmdeploy|openai] [--model M] [--param name:=value]

What replay.launch.py starts (vln_ros/bringup.py), each node its own process with config/vln.yaml, plays
demo/corridor (a robot's camera walking down a corridor to a red door, made by vln_ros/demo/make_bag.py).
The inference node answers from demo/corridor_answers.jsonl: answers *scripted* for the scene by the same
script, because no model weights can be had where this runs. With a GPU and a model, --backend lmdeploy
--model <path> (or openai against a running server) runs the same demo live.

Writes <out>/summary.json and <out>/run.json (everything heard, bag time), <out>/timeline.png and
<out>/keyframes.png, and each process's log under <out>/logs/. Exit code 0 when the run was whole: plans
came, the robot moved and came to a stop, every process ended cleanly.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from vln_ros import local_graph
from vln_ros.core.bags import NS_PER_S
from vln_ros.core.config import ControllerParams, load_node_yaml, validate_params
from vln_ros.demo import corridor, make_bag
from vln_ros.demo.stack import Recording, RunOptions, StackRun
from vln_ros.nodes.conversions import stamp_seconds

LIMIT_KEYS = ('max_linear_x', 'max_linear_y', 'max_angular_z')
SETTLE_S = 1.5   # after the bag: the last plan, stop and diagnostics


def control_rate_hz(commands: list[dict]) -> float:
    """cmd_vel messages per second of bag time while the robot moves (first to last non-zero command)."""
    moving = [i for i, c in enumerate(commands) if c['vx'] or c['vy'] or c['wz']]
    if len(moving) < 2:
        return math.nan
    first, last = moving[0], moving[-1]
    span = commands[last]['t'] - commands[first]['t']
    return (last - first) / span if span > 0 else math.nan


def stops(commands: list[dict], diagnostics: list[dict]) -> list[dict]:
    """Each time the commands came back to zero after moving, with the controller's reason (its next
    /diagnostics)."""
    found, moving = [], False
    for c in commands:
        now_moving = bool(c['vx'] or c['vy'] or c['wz'])
        if moving and not now_moving:
            reason = next((d['values'].get('stop_reason', '?') for d in diagnostics if d['t'] >= c['t']), '?')
            found.append({'t': c['t'], 'reason': reason})
        moving = now_moving
    return found


def to_run(recording: Recording, options: RunOptions, codes: dict[str, int]) -> dict:
    """Everything heard, as plain data with bag times (run.json; the pictures and tests read it)."""
    limits = validate_params(ControllerParams, load_node_yaml(options.params_file, 'controller_node'))
    bag = recording.bag_time
    commands = [{'t': bag(s.wall_s), 'wall': s.wall_s, 'vx': s.msg.linear.x, 'vy': s.msg.linear.y,
                 'wz': s.msg.angular.z} for s in recording.commands]
    plans = [{'received': bag(s.wall_s), 'stamp': stamp_seconds(s.msg.header.stamp), 'task_id': s.msg.task_id, 'action': s.msg.action,
              'environment': s.msg.environment, 'stop': s.msg.stop, 'latency': s.msg.inference_latency,
              'model': s.msg.model, 'waypoints': [[w.dx, w.dy, w.dtheta, w.confidence] for w in s.msg.waypoints]}
             for s in recording.plans]
    statuses = [{'t': bag(s.wall_s), 'task_id': s.msg.task_id, 'state': s.msg.state_name, 'reason': s.msg.reason}
                for s in recording.statuses]
    diagnostics = {name: [{'t': bag(s.wall_s), 'level': int.from_bytes(s.msg.level, 'little'), 'message': s.msg.message,
                           'values': {kv.key: kv.value for kv in s.msg.values}} for s in entries]
                   for name, entries in recording.diagnostics.items()}
    controller_diagnostics = next((v for k, v in diagnostics.items() if k.endswith('controller_node')), [])
    within = all(abs(c[key]) <= getattr(limits, limit) + 1e-6 and math.isfinite(c[key])
                 for c in commands for key, limit in zip(('vx', 'vy', 'wz'), LIMIT_KEYS))
    events = [{'t': s['t'], 'label': f"task {s['state']}"} for s in statuses
              if s['state'] in ('active', 'stopped', 'failed')]
    # One event per change of state, not per status message.
    events = [e for i, e in enumerate(events) if i == 0 or e['label'] != events[i - 1]['label']]
    return {
        'title': f'vln_ros demo: {options.bag.name} bag at {options.rate:g}x through camera_node, inference_node '
                 f'({options.backend}) and controller_node',
        'bag_start_s': make_bag.START_NS / NS_PER_S,
        'limits': {key: getattr(limits, key) for key in LIMIT_KEYS},
        'rate_hz': limits.rate_hz,
        'keyframes': [{'t': bag(s.wall_s), 'stamp': stamp_seconds(s.msg.header.stamp)} for s in recording.keyframes],
        'plans': plans, 'commands': commands, 'statuses': statuses, 'events': events,
        'stops': stops(commands, controller_diagnostics),
        'control_rate_hz': control_rate_hz(commands), 'within_limits': within,
        'diagnostics': {name: entries[-1] for name, entries in diagnostics.items() if entries},
        'exit_codes': codes,
    }


def _node_values(run: dict, node: str) -> dict[str, str]:
    return next((d['values'] for name, d in run['diagnostics'].items() if name.endswith('/' + node)), {})


def summary(run: dict) -> tuple[str, bool]:
    """The text `make demo` prints, and whether the run was whole."""
    start = run['bag_start_s']
    cam, inf, ctl = (_node_values(run, n) for n in ('camera_node', 'inference_node', 'controller_node'))
    actions = Counter(p['action'] for p in run['plans'])
    latencies = np.array([p['latency'] for p in run['plans'] if p['action'] != 'new_task'] or [math.nan])
    final = run['statuses'][-1] if run['statuses'] else {'state': '?', 'reason': 'no task status heard'}
    moved = any(c['vx'] or c['vy'] or c['wz'] for c in run['commands'])
    stopped = bool(run['commands']) and not (run['commands'][-1]['vx'] or run['commands'][-1]['vy']
                                             or run['commands'][-1]['wz'])
    clean = all(code == 0 for code in run['exit_codes'].values())
    lines = [
        run['title'],
        f"  camera_node     {cam.get('frames_received', '?')} frames received, {cam.get('decode_errors', '?')} "
        f"rejected, {len(run['keyframes'])} keyframes heard (published {cam.get('keyframes_published', '?')}); "
        f"frame time p50 {cam.get('frame_time_ms_p50', '?')} ms",
        f"  inference_node  {inf.get('model', '?')}: {inf.get('requests', '?')} requests, {len(run['plans'])} plans "
        f"({', '.join(f'{a} {n}' for a, n in actions.most_common())}); keyframes dropped while busy "
        f"{inf.get('keyframes_dropped', '?')}",
        f"                  keyframe -> plan p50 {np.nanpercentile(latencies, 50) * 1e3:.0f} ms, p99 "
        f"{np.nanpercentile(latencies, 99) * 1e3:.0f} ms (model {inf.get('backend_ms_p50', '?')} ms + waiting for "
        f"it {inf.get('wait_ms_p50', '?')} ms + node {inf.get('overhead_ms_p50', '?')} ms, p50)",
        f"  controller_node {run['control_rate_hz']:.1f} Hz of cmd_vel while moving (configured {run['rate_hz']:g} "
        f"Hz; period p99 {ctl.get('period_ms_p99', '?')} ms), {len(run['commands'])} commands, every one within "
        f"limits: {run['within_limits']}",
        '  stops: ' + (', '.join(f"{s['t'] - start:.1f} s {s['reason']}" for s in run['stops']) or 'none'),
        f"  task: {final['state']} ({final['reason']})",
        '  exit codes: ' + ', '.join(f'{name} {code}' for name, code in run['exit_codes'].items()),
    ]
    whole = bool(run['plans']) and moved and stopped and run['within_limits'] and clean
    return '\n'.join(lines), whole


def annotated_keyframes(recording: Recording) -> list[tuple[float, str, np.ndarray]]:
    """(capture stamp, action, BGR) of each annotated keyframe heard, with the action of its plan."""
    from vln_ros.core.images import decode
    actions = {stamp_seconds(p.msg.header.stamp): p.msg.action for p in recording.plans}
    out = []
    for s in recording.debug_images:
        stamp = stamp_seconds(s.msg.header.stamp)
        out.append((stamp, actions.get(stamp, '?'), np.array(decode(s.msg))))
    return out


def run_demo(options: RunOptions, out: Path) -> tuple[dict, Recording]:
    bag_s = corridor.frame_times(corridor.walk())[-1]
    with StackRun(options, out / 'logs') as run:
        run.start_stack()
        run.play()
        if not run.wait_until(lambda: run.player.poll() is not None, options.wait_s + bag_s / options.rate + 30.0):
            print('the player did not finish in time', file=sys.stderr)
        time.sleep(SETTLE_S)
        codes = run.stop()
    return to_run(run.recording, options, codes), run.recording


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1.0)')
    parser.add_argument('--out', type=Path, default=Path('demo_out'), help='output folder (default demo_out)')
    parser.add_argument('--backend', choices=('replay', 'lmdeploy', 'openai'), default='replay',
                        help='replay: the scripted answers (default); lmdeploy or openai: a live model')
    parser.add_argument('--model', default='', help='lmdeploy: weights folder; openai: served model name')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='another inference_node parameter, e.g. openai.base_url:=http://gpu:23333/v1')
    parser.add_argument('--wait', type=float, default=None, metavar='S',
                        help='how long the player waits for the stack (default 30 s, 600 s for a live model)')
    args = parser.parse_args(argv)
    for item in args.param:
        if ':=' not in item:
            parser.error(f'--param {item!r}: expected NAME:=VALUE')
    options = RunOptions(rate=args.rate, backend=args.backend, model=args.model, inference_params=tuple(args.param),
                         wait_s=args.wait if args.wait is not None else (30.0 if args.backend == 'replay' else 600.0))
    for needed in (options.bag, options.answers):
        if not needed.exists():
            parser.error(f'{needed} is missing: `python -m vln_ros.demo.make_bag` makes it')

    local_graph.use(domain_id=100 + os.getpid() % 100)  # the demo's graph stays on this machine
    print(f'playing {options.bag} through the stack ({options.backend} answers); logs in {args.out / "logs"} ...',
          flush=True)
    run, recording = run_demo(options, args.out)
    from vln_ros.demo import pictures
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'run.json').write_text(json.dumps(run))
    text, whole = summary(run)
    (args.out / 'summary.json').write_text(json.dumps({'text': text, 'whole': whole}, indent=1))
    pictures.timeline(args.out / 'timeline.png', run)
    pictures.keyframe_strip(args.out / 'keyframes.png', run, annotated_keyframes(recording))
    print(text)
    print(f"pictures: {args.out / 'timeline.png'}, {args.out / 'keyframes.png'}; data: {args.out / 'run.json'}")
    return 0 if whole else 1


if __name__ == '__main__':
    raise SystemExit(main())
