"""What imports what, and what ships: read from the source files (ast), no ROS graph.

The shipped runtime (vln_ros/ without its development packages, and launch/) never imports development code,
so a robot's install can leave it out. The development packages stand in a row on one floor: demo, eval and
bench import vln_ros.harness and never each other's helpers (bench runs make eval's episodes through eval's
own entry points, the one thing of eval's it benchmarks). CMakeLists.txt and setup.cfg leave out the same
packages.
"""
from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import pytest
from conftest import REPO
from setuptools import find_packages

# bench's closed-loop benchmark runs make eval itself: these are what it benchmarks, not borrowed helpers.
BENCHMARKED = {'vln_ros.eval.run', 'vln_ros.eval.metrics', 'vln_ros.eval.safety', 'vln_ros.eval.stack.EvalOptions'}


def find_options() -> configparser.SectionProxy:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / 'setup.cfg')
    return cfg['options.packages.find']


def development_packages() -> set[str]:
    """The packages setup.cfg leaves out of what ships: {'vln_ros.demo', ...}."""
    return {p for p in find_options()['exclude'].split() if not p.endswith('.*')}


def imported(source: str) -> set[str]:
    """What a source imports, at any depth (function-level imports included): `import a.b` as 'a.b', `from a
    import b` as 'a.b'."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(f'{node.module}.{a.name}' for a in node.names)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + '.')


def home(path: str, development: set[str]) -> str:
    """Which part of the tree a file (relative path) belongs to: a development package, 'bench', 'test',
    'shipped' (the rest of vln_ros/, and launch/) or 'other' (tools/, models/)."""
    module = path.removesuffix('.py').replace('/', '.')
    for package in development:
        if within(module, package):
            return package
    top = path.split('/')[0]
    if top in ('bench', 'test'):
        return top
    return 'shipped' if top in ('vln_ros', 'launch') else 'other'


def wrong_imports(files: dict[str, str], development: set[str]) -> list[str]:
    """'path: name' for each import that breaks the layering: shipped code importing development code, a
    development package importing another's helpers (the harness is the floor: it imports none of them),
    bench importing demo, or eval beyond what it benchmarks. test/ may import anything it tests."""
    harness = 'vln_ros.harness'
    wrong = []
    for path, source in sorted(files.items()):
        where = home(path, development)
        if where in ('test', 'other'):
            continue
        for name in sorted(imported(source)):
            theirs = next((p for p in development if within(name, p)), None)
            if theirs is None or theirs == where or (theirs == harness and where != 'shipped'):
                continue
            if where == 'bench' and any(within(name, b) for b in BENCHMARKED):
                continue
            wrong.append(f'{path}: {name}')
    return wrong


def tree_sources() -> dict[str, str]:
    paths = [*(REPO / 'vln_ros').rglob('*.py'), *(REPO / 'launch').glob('*.py'), *(REPO / 'bench').glob('*.py')]
    return {str(p.relative_to(REPO)): p.read_text() for p in paths}


def test_the_development_packages_are_demo_eval_and_the_harness():
    assert development_packages() == {'vln_ros.demo', 'vln_ros.eval', 'vln_ros.harness'}


def test_no_file_imports_across_the_layers():
    assert wrong_imports(tree_sources(), development_packages()) == []


@pytest.mark.parametrize(('path', 'source', 'named'), [
    ('vln_ros/eval/stack.py', 'from vln_ros.demo.stack import ProcessGroup', 'vln_ros.demo.stack.ProcessGroup'),
    ('vln_ros/demo/run.py', 'def f():\n    from vln_ros.eval.stack import free_port', 'vln_ros.eval.stack.free_port'),
    ('vln_ros/harness/observer.py', 'import vln_ros.demo.stack', 'vln_ros.demo.stack'),
    ('bench/run.py', 'from vln_ros.demo.run import unwritable', 'vln_ros.demo.run.unwritable'),
    ('bench/run.py', 'from vln_ros.eval.stack import SideChannel', 'vln_ros.eval.stack.SideChannel'),
    ('bench/run.py', 'import vln_ros.eval.stack', 'vln_ros.eval.stack'),
    ('vln_ros/nodes/sim_node.py', 'from vln_ros.harness import local_graph', 'vln_ros.harness.local_graph'),
    ('vln_ros/core/control.py', 'from vln_ros import eval', 'vln_ros.eval'),
    ('launch/vln.launch.py', 'from vln_ros.demo.make_bag import BAG_NAME', 'vln_ros.demo.make_bag.BAG_NAME'),
])
def test_a_sideways_or_shipped_to_development_import_is_caught(path, source, named):
    assert f'{path}: {named}' in wrong_imports({path: source}, development_packages())


@pytest.mark.parametrize(('path', 'source'), [
    ('vln_ros/eval/stack.py', 'from vln_ros.harness.processes import ProcessGroup'),
    ('vln_ros/demo/stack.py', 'from vln_ros.demo.make_bag import BAG_NAME'),
    ('bench/run.py', 'from vln_ros.eval.stack import EvalOptions'),
    ('bench/run.py', 'from vln_ros.eval import run as eval_run'),
    ('bench/run.py', 'from vln_ros.eval.run import run_set'),
    ('test/test_e2e.py', 'from vln_ros.demo.stack import StackRun'),
    ('vln_ros/nodes/camera_node.py', 'from vln_ros.core.keyframe import KeyframeSampler'),
])
def test_imports_within_a_layer_or_from_the_floor_pass(path, source):
    assert wrong_imports({path: source}, development_packages()) == []


def test_cmake_and_setup_cfg_leave_out_the_same_development_packages():
    cmake = (REPO / 'CMakeLists.txt').read_text()
    cmake_packages = re.search(r'set\(VLN_ROS_DEVELOPMENT_PACKAGES ([^)]*)\)', cmake)
    assert cmake_packages is not None
    development = development_packages()
    assert {f'vln_ros.{p}' for p in cmake_packages.group(1).split()} == development
    assert set(find_options()['exclude'].split()) == development | {f'{p}.*' for p in development}


def test_what_setup_cfg_ships_is_every_package_of_vln_ros_but_the_development_ones():
    options = find_options()
    shipped = set(find_packages(str(REPO), include=options['include'].replace(',', ' ').split(),
                                exclude=options['exclude'].split()))
    every = {str(p.parent.relative_to(REPO)).replace('/', '.') for p in (REPO / 'vln_ros').rglob('__init__.py')}
    development = development_packages()
    assert shipped == {p for p in every if not any(within(p, d) for d in development)}
    assert {'vln_ros', 'vln_ros.core', 'vln_ros.nodes', 'vln_ros.console', 'vln_ros.sim'} <= shipped


def test_cmake_patterns_name_only_the_development_folders():
    """install(DIRECTORY ... PATTERN <name> EXCLUDE) leaves out every file or folder of that name at any depth:
    the names must be the development folders and nothing else under vln_ros/."""
    names = {p.rsplit('.', 1)[1] for p in development_packages()}
    matches = {path.relative_to(REPO / 'vln_ros') for path in (REPO / 'vln_ros').rglob('*') if path.name in names
               and '__pycache__' not in path.parts}
    assert matches == {Path(n) for n in names}
