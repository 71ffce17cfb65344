"""`make demo`: the bundled corridor bag through the three real node processes, with a summary and pictures.

    vln_demo [--rate 1.0] [--out demo_out] [--backend replay|lmdeploy|openai] [--model M] [--param name:=value]

What replay.launch.py starts (vln_ros/bringup.py), each node its own process with config/vln.yaml, plays
demo/corridor (a robot's camera walking down a corridor to a red door, made by vln_ros/demo/make_bag.py).
The inference node answers from demo/corridor_answers.jsonl: answers *scripted* for the scene by the same
script, because no model weights can be had where this runs. With a GPU and a model, --backend lmdeploy
--model <path> (or openai against a running server) runs the same demo live.

The graph runs in a private DDS domain that nobody else on this machine is in (vln_ros/harness/local_graph.py; the
exported ROS_DOMAIN_ID is never used): the demo's cmd_vel must never reach a robot's base driver.

Writes <out>/summary.json and <out>/run.json (everything heard, bag time), <out>/timeline.png and
<out>/keyframes.png, and each process's log under <out>/logs/. Exit code 0 when the run was whole: plans
came, the robot moved and came to a stop, every process ended cleanly, and no figure is impossible (times
outside the bag, negative or NaN figures, more heard than published...); 1 otherwise, naming what failed;
2 when it could not start (an output folder it cannot write, no private domain).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from vln_ros.core.bags import NS_PER_S
from vln_ros.core.config import ControllerParams, load_node_yaml, validate_params
from vln_ros.core.limits import VelocityLimits
from vln_ros.demo import corridor
from vln_ros.demo.stack import Recording, RunOptions, StackRun
from vln_ros.harness.processes import parameter_pairs
from vln_ros.harness.run_setup import begin_run
from vln_ros.nodes.conversions import stamp_seconds

SETTLE_S = 1.5   # after the bag: the last plan, stop and diagnostics
TIME_SLACK_S = 1.0   # bag time of what was heard may be off by this much (wall -> bag line, delivery)
RATE_SLACK = 1.25    # cmd_vel faster than this x the configured rate is not one controller at work
NODES = ('camera_node', 'inference_node', 'controller_node')


def bag_facts(bag: Path, camera_topic: str) -> dict:
    """The played bag's first and last message times [s] and its number of camera frames."""
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        frames = sum(c.msgcount for c in reader.connections if c.topic.startswith(camera_topic))
        return {'bag_start_s': reader.start_time / NS_PER_S, 'bag_end_s': (reader.end_time - 1) / NS_PER_S,
                'bag_frames': frames}


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


def to_run(recording: Recording, options: RunOptions, codes: dict[str, int], domain_id: int | None = None) -> dict:
    """Everything heard, as plain data with bag times (run.json; the pictures and tests read it)."""
    limits = validate_params(ControllerParams, load_node_yaml(options.params_file, 'controller_node'))
    bag = recording.bag_time
    commands = [{'t': bag(s.wall_s), 'wall': s.wall_s, 'vx': s.msg.linear.x, 'vy': s.msg.linear.y,
                 'wz': s.msg.angular.z} for s in recording.commands]
    plans = [{'received': bag(s.wall_s), 'stamp': stamp_seconds(s.msg.header.stamp), 'task_id': s.msg.task_id,
              'action': s.msg.action,
              'environment': s.msg.environment, 'stop': s.msg.stop, 'latency': s.msg.inference_latency,
              'model': s.msg.model, 'waypoints': [[w.dx, w.dy, w.dtheta, w.confidence] for w in s.msg.waypoints]}
             for s in recording.plans]
    statuses = [{'t': bag(s.wall_s), 'task_id': s.msg.task_id, 'state': s.msg.state_name, 'reason': s.msg.reason}
                for s in recording.statuses]
    diagnostics = {name: [{'t': bag(s.wall_s), 'level': int.from_bytes(s.msg.level, 'little'), 'message': s.msg.message,
                           'values': {kv.key: kv.value for kv in s.msg.values}} for s in entries]
                   for name, entries in recording.diagnostics.items()}
    controller_diagnostics = next((v for k, v in diagnostics.items() if k.endswith('controller_node')), [])
    within = all(VelocityLimits.of(limits).allows(c['vx'], c['vy'], c['wz'], slack=1e-6) for c in commands)
    events = [{'t': s['t'], 'label': f"task {s['state']}"} for s in statuses
              if s['state'] in ('active', 'stopped', 'failed')]
    # One event per change of state, not per status message.
    events = [e for i, e in enumerate(events) if i == 0 or e['label'] != events[i - 1]['label']]
    return {
        'title': f'vln_ros demo: {options.bag.name} bag at {options.rate:g}x through camera_node, inference_node '
                 f'({options.backend}) and controller_node',
        **bag_facts(options.bag, options.camera_topic),
        'domain_id': domain_id,
        'playback_rate': options.rate,
        'limits': VelocityLimits.of(limits).as_dict(),
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


def _count(values: dict[str, str], key: str) -> float | None:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def impossible_figures(run: dict) -> list[str]:
    """Figures that no single, whole run of the demo can produce, each named with its value: times outside the
    bag, negative or NaN durations and rates, more heard than the nodes say they published, more frames than
    the bag holds. Another graph's nodes in the demo's domain (a second demo, a robot) produce exactly these."""
    bad: list[str] = []
    start, end = run['bag_start_s'], run['bag_end_s']
    span = f'the bag spans 0-{end - start:.1f} s'

    def outside(t: float) -> bool:
        return not (math.isfinite(t) and start - TIME_SLACK_S <= t <= end + TIME_SLACK_S)

    def first_outside(what: str, items: list[dict], key: str) -> None:
        wrong = [item[key] for item in items if outside(item[key])]
        if wrong:
            bad.append(f'{what} at {wrong[0] - start:.1f} s ({len(wrong)} of {len(items)} outside the bag; {span})')

    first_outside('stops', run['stops'], 't')
    first_outside('keyframe stamp', run['keyframes'], 'stamp')
    first_outside('keyframe heard', run['keyframes'], 't')
    first_outside('plan stamp', run['plans'], 'stamp')
    first_outside('plan heard', run['plans'], 'received')
    first_outside('cmd_vel heard', run['commands'], 't')
    early = [p for p in run['plans'] if p['received'] < p['stamp'] - TIME_SLACK_S]
    if early:
        bad.append(f"plan heard {early[0]['stamp'] - early[0]['received']:.1f} s before its keyframe was taken "
                   f"({len(early)} plans)")
    latencies = [p['latency'] for p in run['plans']]
    wrong = [x for x in latencies if not (math.isfinite(x) and x >= 0.0)]
    if wrong:
        bad.append(f'plan latency {wrong[0]} s ({len(wrong)} of {len(latencies)} negative or not a number)')

    moved = any(c['vx'] or c['vy'] or c['wz'] for c in run['commands'])
    ctl = _node_values(run, 'controller_node')
    playback = run.get('playback_rate', 1.0)
    # cmd_vel per second of bag time; the controller's own rate_hz is per wall second (its timer is on bag time)
    for what, rate, factor in (('cmd_vel rate while moving', run['control_rate_hz'] if moved else None, 1.0),
                               ('controller_node rate_hz', _count(ctl, 'rate_hz'), playback)):
        if rate is not None and not (math.isfinite(rate) and 0.0 < rate <= RATE_SLACK * run['rate_hz'] * factor):
            played = f' x {factor:g} playback' if factor != 1.0 else ''
            bad.append(f"{what} {rate:.1f} Hz (configured {run['rate_hz']:g} Hz{played}: at most {RATE_SLACK:g} x "
                       'that)')

    values = {node: _node_values(run, node) for node in NODES}
    for node, v in values.items():
        if not v:
            bad.append(f'no /diagnostics heard from {node}')
    cam, inf = values['camera_node'], values['inference_node']
    for what, more, than, than_what in (
            ('camera_node frames_received', _count(cam, 'frames_received'), run['bag_frames'], 'frames in the bag'),
            ('camera_node keyframes_published', _count(cam, 'keyframes_published'), _count(cam, 'frames_received'),
             'frames it received'),
            ('keyframes heard', len(run['keyframes']), _count(cam, 'keyframes_published'),
             'camera_node keyframes_published'),
            ('inference_node keyframes_received', _count(inf, 'keyframes_received'),
             _count(cam, 'keyframes_published'), 'camera_node keyframes_published'),
            ('plans heard', len(run['plans']), _count(inf, 'plans_published'), 'inference_node plans_published'),
            ('controller_node plans_received', _count(ctl, 'plans_received'), _count(inf, 'plans_published'),
             'inference_node plans_published'),
            ('cmd_vel heard', len(run['commands']), _count(ctl, 'commands_published'),
             'controller_node commands_published')):
        if more is not None and than is not None and more > than:
            bad.append(f'{what} {more:g} > {than:g} {than_what}')
    return bad


def failures(run: dict) -> list[str]:
    """Why the run was not whole (empty when it was): what did not happen, and every impossible figure."""
    commands = run['commands']
    moved = any(c['vx'] or c['vy'] or c['wz'] for c in commands)
    stopped = bool(commands) and not (commands[-1]['vx'] or commands[-1]['vy'] or commands[-1]['wz'])
    why = [text for failed, text in ((not run['plans'], 'no plan heard'), (not moved, 'the robot never moved'),
                                     (moved and not stopped, 'the robot did not come to a stop'),
                                     (not run['within_limits'], 'a velocity command exceeded the limits'))
           if failed]
    why += [f'{name} exited {code}' for name, code in run['exit_codes'].items() if code != 0]
    return why + [f'impossible figure: {figure}' for figure in impossible_figures(run)]


def summary(run: dict) -> tuple[str, bool]:
    """The text `make demo` prints, and whether the run was whole."""
    start = run['bag_start_s']
    cam, inf, ctl = (_node_values(run, n) for n in NODES)
    actions = Counter(p['action'] for p in run['plans'])
    latencies = [p['latency'] for p in run['plans'] if p['action'] != 'new_task']
    final = run['statuses'][-1] if run['statuses'] else {'state': '?', 'reason': 'no task status heard'}

    def ms(q: float) -> str:
        return f'{np.percentile(latencies, q) * 1e3:.0f}' if latencies else '?'

    lines = [
        run['title'],
        f"  ROS domain {run.get('domain_id', '?')} (private)",
        f"  camera_node     {cam.get('frames_received', '?')} frames received, {cam.get('decode_errors', '?')} "
        f"rejected, {len(run['keyframes'])} keyframes heard (published {cam.get('keyframes_published', '?')}); "
        f"frame time p50 {cam.get('frame_time_ms_p50', '?')} ms",
        f"  inference_node  {inf.get('model', '?')}: {inf.get('requests', '?')} requests, {len(run['plans'])} plans "
        f"({', '.join(f'{a} {n}' for a, n in actions.most_common())}); keyframes dropped while busy "
        f"{inf.get('keyframes_dropped', '?')}",
        f"                  keyframe -> plan p50 {ms(50)} ms, p99 {ms(99)} ms (model {inf.get('backend_ms_p50', '?')} "
        f"ms + waiting for it {inf.get('wait_ms_p50', '?')} ms + node {inf.get('overhead_ms_p50', '?')} ms, p50)",
        f"  controller_node {run['control_rate_hz']:.1f} Hz of cmd_vel while moving (configured {run['rate_hz']:g} "
        f"Hz; period p99 {ctl.get('period_ms_p99', '?')} ms), {len(run['commands'])} commands, every one within "
        f"limits: {run['within_limits']}",
        '  stops: ' + (', '.join(f"{s['t'] - start:.1f} s {s['reason']}" for s in run['stops']) or 'none'),
        f"  task: {final['state']} ({final['reason']})",
        '  exit codes: ' + ', '.join(f'{name} {code}' for name, code in run['exit_codes'].items()),
    ]
    why = failures(run)
    lines += [f'  FAILED: {reason}' for reason in why]
    return '\n'.join(lines), not why


def annotated_keyframes(recording: Recording) -> list[tuple[float, str, np.ndarray]]:
    """(capture stamp, action, BGR) of each annotated keyframe heard, with the action of its plan."""
    from vln_ros.core.images import decode
    actions = {stamp_seconds(p.msg.header.stamp): p.msg.action for p in recording.plans}
    out = []
    for s in recording.debug_images:
        stamp = stamp_seconds(s.msg.header.stamp)
        out.append((stamp, actions.get(stamp, '?'), np.array(decode(s.msg))))
    return out


def run_demo(options: RunOptions, out: Path, domain_id: int | None = None) -> tuple[dict, Recording]:
    bag_s = corridor.frame_times(corridor.walk())[-1]
    with StackRun(options, out / 'logs') as run:
        run.start_stack()
        run.play()
        if options.console:  # interactive: the bag loops under the console until Ctrl-C (main says 130)
            print(f'operator console: {console_url(options)}  (the bag loops; Ctrl-C ends the demo)', flush=True)
            while run.player.poll() is None:
                time.sleep(0.5)
        if not run.wait_until(lambda: run.player.poll() is not None, options.wait_s + bag_s / options.rate + 30.0):
            print('the player did not finish in time', file=sys.stderr)
        time.sleep(SETTLE_S)
        codes = run.stop()
    return to_run(run.recording, options, codes, domain_id), run.recording


def console_url(options: RunOptions) -> str:
    """Where make demo's console listens (its parameter file section, then --console-port)."""
    from vln_ros.core.config import ConsoleParams, load_node_yaml, validate_params
    params = validate_params(ConsoleParams, {**load_node_yaml(options.params_file, 'console_node'),
                                             **parameter_pairs(options.console_params)})
    return f'http://{params.address}:{params.port}/'


def write_outputs(out: Path, run: dict, recording: Recording, text: str, whole: bool) -> None:
    from vln_ros.demo import pictures
    (out / 'run.json').write_text(json.dumps(run))
    (out / 'summary.json').write_text(json.dumps({'text': text, 'whole': whole}, indent=1))
    pictures.timeline(out / 'timeline.png', run)
    pictures.keyframe_strip(out / 'keyframes.png', run, annotated_keyframes(recording))


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
    parser.add_argument('--console', action='store_true',
                        help='also the operator console (console_node): the bag loops until Ctrl-C; open the '
                             'address it prints in a browser')
    parser.add_argument('--console-port', type=int, default=None, metavar='PORT',
                        help="the console's port (default: the parameter file's, 8080)")
    args = parser.parse_args(argv)
    for item in args.param:
        if ':=' not in item:
            parser.error(f'--param {item!r}: expected NAME:=VALUE')
    options = RunOptions(rate=args.rate, backend=args.backend, model=args.model, inference_params=tuple(args.param),
                         wait_s=args.wait if args.wait is not None else (30.0 if args.backend == 'replay' else 600.0),
                         console=args.console, loop=args.console,
                         console_params=() if args.console_port is None else (f'port:={args.console_port}',))
    for needed in (options.bag, options.answers):
        if not needed.exists():
            parser.error(f'{needed} is missing: `python -m vln_ros.demo.make_bag` makes it')

    claim = begin_run('vln_demo', args.out, args.out / 'logs')
    if claim is None:
        return 2
    print(f'playing {options.bag} through the stack ({options.backend} answers); logs in {args.out / "logs"} ...',
          flush=True)
    try:
        run, recording = run_demo(options, args.out, claim.domain_id)
    except KeyboardInterrupt:
        print('vln_demo: interrupted; the stack was stopped', file=sys.stderr)
        return 130
    text, whole = summary(run)
    try:
        write_outputs(args.out, run, recording, text, whole)
    except OSError as e:
        print(text)
        print(f'vln_demo: cannot write the results to {args.out}: {e}', file=sys.stderr)
        return 2
    print(text)
    print(f"pictures: {args.out / 'timeline.png'}, {args.out / 'keyframes.png'}; data: {args.out / 'run.json'}")
    return 0 if whole else 1


if __name__ == '__main__':
    raise SystemExit(main())
