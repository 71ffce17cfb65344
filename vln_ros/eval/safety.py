"""`make eval STUDY=safety`: the collision guard on and off, in worlds with and without people and clutter, under
models that err, at two model latencies (issue 24 item 5).

The oracle plans on the static map and does not see people or clutter (like a model that misses them), so only
the guard stands between them and the robot; the 'drifting' and 'mirrored' models add plans that go into walls.
Every row runs the same seeds. The figures:
- collisions_guard: contacts with walls, landmarks, clutter or people in all guarded rows (target 0);
- collisions_no_guard: the same in the unguarded rows (they should collide: the study can see a collision);
- sr_people_0p5s: the success rate of the guarded oracle among people at 0.5 s (target >= 90 %).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vln_ros.eval import metrics
from vln_ros.eval.stack import EvalOptions
from vln_ros.sim.scene import Scene

# The world: people walking on scripts timed to meet the robot, static clutter on and near the route.
WORLDS: dict[str, dict[str, Any]] = {'empty': {}, 'clutter': {'clutter': 4},
                                     'people': {'people': ('crossing', 'towards')}}
# The model: the oracle, and the oracle with answer faults that go into walls (sim/oracle.py).
MODELS: dict[str, tuple[str, ...]] = {'oracle': (), 'drifting': ('fault_drift:=0.6',),
                                      'mirrored': ('fault_wrong_direction:=0.2',)}
GUARD: dict[str, tuple[str, ...]] = {'on': ('guard.enabled:=true',), 'off': ('guard.enabled:=false',)}
# The counts: >= 20 episodes per row at 0.5 s, >= 10 at 2 s (540 episodes in all).
LATENCY_EPISODES: tuple[tuple[float, int], ...] = ((0.5, 20), (2.0, 10))
SLOW_SPEED = 2.0        # rows at >= 1 s latency run at twice real time (the latency is simulated time)


@dataclass(frozen=True)
class Row:
    """One configuration of the study and how many episodes it runs."""

    guard: bool
    world: str
    model: str
    latency_s: float
    episodes: int

    @property
    def label(self) -> str:
        return f"{'guard' if self.guard else 'no guard'} {self.world} {self.model} {self.latency_s:g}s"


def available(world: str) -> bool:
    """The simulator's reset takes this world's people and clutter (sim/api.py's ResetRequest)."""
    from vln_ros.sim.api import ResetRequest
    return set(WORLDS[world]) <= set(ResetRequest.model_fields)


def rows(worlds: Sequence[str] = tuple(WORLDS), models: Sequence[str] = tuple(MODELS),
         guards: Sequence[str] = tuple(GUARD),
         latency_episodes: Sequence[tuple[float, int]] = LATENCY_EPISODES) -> list[Row]:
    """The study's rows, latency outermost (the slow rows last), guard on before off. ValueError naming an
    unknown world, model or guard setting, or a count below 1."""
    for name, value, known in (('world', worlds, WORLDS), ('model', models, MODELS), ('guard', guards, GUARD)):
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f'unknown {name} {unknown[0]!r}: one of {", ".join(known)}')
    bad = [n for _, n in latency_episodes if n < 1]
    if bad:
        raise ValueError(f'episodes per row must be at least 1, got {bad[0]}')
    return [Row(guard == 'on', world, model, latency_s, episodes)
            for latency_s, episodes in latency_episodes for world in worlds for model in models for guard in guards]


def parse_latency_episodes(text: str) -> list[tuple[float, int]]:
    """'0.5:20,2:10' -> [(0.5, 20), (2.0, 10)]. ValueError naming the bad item."""
    pairs = []
    for item in text.split(','):
        latency, _, count = item.partition(':')
        try:
            pairs.append((float(latency), int(count)))
        except ValueError:
            raise ValueError(f'{item!r}: expected LATENCY_S:EPISODES, e.g. 0.5:20') from None
    return pairs


def row_options(base: EvalOptions, row: Row) -> EvalOptions:
    world = WORLDS[row.world]
    return replace(base, latency_s=row.latency_s, oracle=base.oracle + MODELS[row.model],
                   controller_params=base.controller_params + GUARD['on' if row.guard else 'off'],
                   people=tuple(world.get('people', ())), clutter=int(world.get('clutter', 0)),
                   speed=max(base.speed, SLOW_SPEED) if row.latency_s >= 1.0 else base.speed)


def contacts(record: metrics.EpisodeRecord) -> int:
    """Every contact: walls, landmarks and clutter (collisions) and people (counted apart by the simulator)."""
    return record.collisions + record.person_collisions


@dataclass
class RowResult:
    row: Row
    records: list[metrics.EpisodeRecord]
    scores: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        people_clearances = [r.min_clearance_people_m for r in self.records]
        return {**metrics.summarise(self.scores),
                'wall_collisions': sum(r.collisions for r in self.records),
                'person_collisions': sum(r.person_collisions for r in self.records),
                'contact_episodes': sum(1 for r in self.records if contacts(r)),
                'min_clearance_people_m': min(people_clearances, default=math.inf),
                'guard_stops': sum(len(r.guard_stops) for r in self.records)}


def figures(results: Sequence[RowResult]) -> dict[str, float]:
    """The issue's three figures (nan where the study ran no row for one)."""
    guarded = [r for r in results if r.row.guard]
    unguarded = [r for r in results if not r.row.guard]
    people = [s for r in guarded if r.row.world == 'people' and r.row.model == 'oracle' and r.row.latency_s == 0.5
              for s in r.scores]
    return {
        'collisions_guard': float(sum(contacts(x) for r in guarded for x in r.records)) if guarded else math.nan,
        'collisions_no_guard': float(sum(contacts(x) for r in unguarded for x in r.records)) if unguarded
        else math.nan,
        'sr_people_0p5s': sum(1 for s in people if s['success']) / len(people) if people else math.nan}


def table(results: Sequence[RowResult]) -> str:
    """Markdown: a row per configuration with its success rate, contacts and the guard's stops."""
    lines = ['| guard | world | model | latency s | n | SR % | walls/clutter | people | episodes with contact '
             '| min clearance to people m | guard stops |', '|' + '---|' * 11]
    for r in results:
        s = r.summary()
        low, high = s['sr_ci95']
        clearance = s['min_clearance_people_m']
        lines.append(f"| {'on' if r.row.guard else 'off'} | {r.row.world} | {r.row.model} | {r.row.latency_s:g} "
                     f"| {s['episodes']} | {100 * s['sr']:.0f} [{100 * low:.0f}, {100 * high:.0f}] "
                     f"| {s['wall_collisions']} | {s['person_collisions']} | {s['contact_episodes']} "
                     f"| {clearance:.2f} | {s['guard_stops']} |".replace('| inf |', '| - |'))
    return '\n'.join(lines)


RunSet = Callable[[EvalOptions, list[int], str], tuple[list[metrics.EpisodeRecord], list[dict[str, Any]]]]


def run_study(base: EvalOptions, study_rows: Sequence[Row], first_seed: int, run_set: RunSet,
              on_row: Callable[[RowResult, EvalOptions], None] | None = None) -> list[RowResult]:
    """Each row over seeds first_seed, first_seed + 1, ... (the same seeds in every row with as many episodes).
    run_set(options, seeds, label) runs one configuration (eval/run.py's); on_row sees each result at once."""
    results = []
    for row in study_rows:
        options = row_options(base, row)
        records, scores = run_set(options, list(range(first_seed, first_seed + row.episodes)), row.label)
        result = RowResult(row, records, scores)
        results.append(result)
        if on_row is not None:
            on_row(result, options)
    return results


def physical_scene(seed: int, world: str) -> Scene:
    """The scene of seed as the simulator built it for `world`: with its clutter (boxes, chairs) placed, as
    sim/world.py's prepare() places them (seeded, deterministic), so that the pictures show what the robot met."""
    from vln_ros.sim import people, scenes
    from vln_ros.sim.params import BaseParams
    settings = WORLDS[world]
    scene = scenes.generate(seed)
    count = int(settings.get('clutter', 0))
    if not count:
        return scene
    walks = people.place_people(scene, tuple(settings.get('people', ())))
    return people.with_clutter(scene, people.place_clutter(scene, count, BaseParams().radius_m, walks))


def write_pictures(out: Path, results: Sequence[RowResult]) -> list[Path]:
    """Paths from above with people's tracks, clutter and the guard's stops: one sheet with the guard, one without
    (the people world at the lowest latency, else whatever ran first; the clutter world, when it ran and was not
    that one, on sheets of its own, named ..._clutter.png), and a video of the first guarded episode among
    people."""
    import cv2

    from vln_ros.eval import pictures
    from vln_ros.sim.render import CameraSpec
    if not results:
        return []
    chosen_world = 'people' if any(r.row.world == 'people' for r in results) else results[0].row.world
    latency_s = min(r.row.latency_s for r in results)
    sheets = [(chosen_world, '')]
    if chosen_world != 'clutter' and any(r.row.world == 'clutter' for r in results):
        sheets.append(('clutter', '_clutter'))
    written = []
    for world, suffix in sheets:
        for guard in (True, False):
            picked = [r for r in results if r.row.guard == guard and r.row.world == world
                      and r.row.latency_s == latency_s]
            records = [x for r in picked for x in r.records]
            scores = [s for r in picked for s in r.scores]
            if records:
                path = out / f"safety_paths_{'guard' if guard else 'no_guard'}{suffix}.png"
                drawn = [physical_scene(x.seed, world) for x in records]
                cv2.imwrite(str(path), pictures.paths_sheet(records, scores, drawn).image)
                written.append(path)
    guarded = [x for r in results if r.row.guard and r.row.world == chosen_world for x in r.records]
    if guarded:
        path = out / f'safety_video_seed_{guarded[0].seed}.mp4'
        pictures.video(guarded[0], path, CameraSpec())
        written.append(path)
    return written
