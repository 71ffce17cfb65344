"""core/config: the models, the YAML file and the error messages agree (test_generated.py: the YAML file and
the node pages' tables are what the models generate)."""
from __future__ import annotations

import configparser
import re

import pytest
import yaml
from conftest import REPO

from vln_ros import bringup
from vln_ros.core.config import (
    NODE_PARAMS,
    CameraParams,
    ControllerParams,
    InferenceParams,
    ParameterError,
    load_node_yaml,
    node_key_matches,
    param_specs,
    parameter_file_sections,
    unknown_parameter,
    validate_change,
    validate_params,
)
from vln_ros.core.guard import GuardParams
from vln_ros.sim.params import SimParams

YAML = REPO / 'config' / 'vln.yaml'
# Every node a parameter file may have a section for: the stack's, and sim_node (development, its own model).
ALL_NODE_PARAMS = {**NODE_PARAMS, 'sim_node': SimParams}
NAMESPACES = ('/', '/r1', '/fleet/r1')


@pytest.mark.parametrize('node', sorted(NODE_PARAMS))
def test_yaml_holds_exactly_the_model_defaults(node):
    model = NODE_PARAMS[node]
    from_yaml = load_node_yaml(YAML, node)
    defaults = {s.name: s.default for s in param_specs(model)}
    assert from_yaml == defaults
    assert all(type(from_yaml[k]) is type(v) for k, v in defaults.items())  # 1 vs 1.0 matters to ROS
    assert validate_params(model, from_yaml) == model()


@pytest.mark.parametrize('node', sorted(NODE_PARAMS))
def test_every_parameter_is_described_with_its_range(node):
    for spec in param_specs(NODE_PARAMS[node]):
        assert len(spec.description) > 15, spec.name
        assert spec.type in (str, bool, list) or spec.minimum is not None, spec.name
        if spec.name.endswith('_s'):
            assert spec.unit == 's', spec.name
        if spec.name.endswith('_px'):
            assert spec.unit == 'px', spec.name


@pytest.mark.parametrize(('values', 'expected'), [
    ({'max_side_px': -1}, "parameter 'max_side_px' = -1 is invalid .*allowed: 0 <= int <= 8192 \\[px\\]"),
    ({'jpeg_quality': 101}, "parameter 'jpeg_quality' = 101 .*allowed: 1 <= int <= 100"),
    ({'keyframe.change_threshold': 0.0},
     "parameter 'keyframe.change_threshold' = 0.0 .*allowed: 0.0 < float <= 1.0"),
    ({'keyframe.max_interval_s': float('nan')}, "'keyframe.max_interval_s' = nan is not finite"),
    ({'input_transport': 'h264'}, "'input_transport' = 'h264' .*allowed: one of raw, compressed"),
    ({'keyframe.min_interval_s': 9.0}, 'keyframe.min_interval_s \\(9.0\\) must not exceed'),
    ({'keyframe.weight_pixel': 0.0, 'keyframe.weight_edge': 0.0, 'keyframe.weight_histogram': 0.0},
     'must be > 0'),
    ({'max_sid_px': 100}, "unknown parameter 'max_sid_px' \\(did you mean 'max_side_px'\\?\\)"),
])
def test_bad_values_name_parameter_value_and_range(values, expected):
    with pytest.raises(ParameterError, match=expected):
        validate_params(CameraParams, values)


def test_node_executables_match_between_cmake_and_setup_cfg():
    cmake = (REPO / 'CMakeLists.txt').read_text()
    cmake_nodes = set(re.search(r'set\(VLN_ROS_NODES ([^)]*)\)', cmake).group(1).split())
    cfg = configparser.ConfigParser()
    cfg.read(REPO / 'setup.cfg')
    scripts = dict(line.split(' = ') for line in cfg['options.entry_points']['console_scripts'].split('\n') if line)
    nodes = {name for name, target in scripts.items() if target.startswith('vln_ros.nodes.')}
    assert cmake_nodes == nodes
    for name in nodes:  # the generated launcher imports vln_ros.nodes.<name>:main
        assert scripts[name] == f'vln_ros.nodes.{name}:main'


# -- parameter files: which sections apply to a node (rcl's rule) ----------------------------------------

@pytest.mark.parametrize(('key', 'node', 'applies'), [
    # (what rclpy 9.1 (Kilted) did with each, measured: test_parameters.py checks it against rclpy itself)
    ('controller_node', '/controller_node', True),
    ('controller_node', '/r1/controller_node', False),      # a plain key: the root namespace only
    ('/controller_node', '/controller_node', True),
    ('/**/controller_node', '/controller_node', True),      # ** is any number of levels, none included
    ('/**/controller_node', '/r1/controller_node', True),
    ('/**/controller_node', '/fleet/r1/controller_node', True),
    ('/**/controller_node', '/r1/camera_node', False),
    ('**/controller_node', '/r1/controller_node', True),    # '/' is put in front of a key without one
    ('/**', '/fleet/r1/controller_node', True),
    ('/*/controller_node', '/r1/controller_node', True),    # * is exactly one level
    ('/*/controller_node', '/controller_node', False),
    ('/*/controller_node', '/fleet/r1/controller_node', False),
    ('/*', '/controller_node', True),
    ('/*', '/r1/controller_node', False),
    ('/r1/*', '/r1/controller_node', True),
    ('/r1/*', '/r2/controller_node', False),
    ('/*/*/controller_node', '/fleet/r1/controller_node', True),
    ('/**/r1/**/controller_node', '/fleet/r1/controller_node', True),
    ('/**/r1/**/controller_node', '/fleet/r2/controller_node', False),
    ('r1/controller_node', '/r1/controller_node', True),    # what nested keys r1: {controller_node: ...} give
    ('/r1/controller_node', '/r1/controller_node_2', False),  # the whole name must match
])
def test_node_keys_apply_as_rcl_applies_them(key, node, applies):
    assert node_key_matches(key, node) is applies


def test_sections_are_named_by_the_keys_above_ros_parameters_as_rcl_names_them():
    data = yaml.safe_load("""
/**/camera_node:
  ros__parameters: {jpeg_quality: 70, keyframe: {change_threshold: 0.2}}
r1:
  controller_node:
    ros__parameters: {max_linear_x: 0.3}
  /**:
    ros__parameters: {}
notes: just a value
""")
    assert parameter_file_sections(data) == [
        ('/**/camera_node', {'jpeg_quality': 70, 'keyframe.change_threshold': 0.2}),
        ('r1/controller_node', {'max_linear_x': 0.3}),
        ('r1//**', {}),  # rcl refuses this file ('repeated forward slash'); it never matches here either
    ]
    assert not node_key_matches('r1//**', '/r1/controller_node')
    assert parameter_file_sections(None) == [] and parameter_file_sections(['a']) == []


def test_later_matching_sections_win_as_in_rclpy(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters: {max_linear_x: 0.1, lookahead_m: 0.6}\n'
                    '/**/controller_node:\n  ros__parameters: {max_linear_x: 0.2}\n'
                    '/r2/controller_node:\n  ros__parameters: {max_linear_x: 0.9}\n')
    assert load_node_yaml(path, 'controller_node', '/r1') == {'max_linear_x': 0.2, 'lookahead_m': 0.6}
    assert load_node_yaml(path, 'controller_node', '/r2')['max_linear_x'] == 0.9
    assert load_node_yaml(path, 'camera_node') == {'max_linear_x': 0.1, 'lookahead_m': 0.6}


def documented_parameter_files() -> dict[str, str]:
    """The parameter files the README and docs/ show: ```yaml blocks, and files written by a shell here-document."""
    files = {}
    for page in sorted([REPO / 'README.md', *(REPO / 'docs').rglob('*.md')]):
        text = page.read_text()
        blocks = re.findall(r'^```yaml\n(.*?)^```', text, re.M | re.S)
        blocks += re.findall(r'^cat > \S+\.yaml <<EOF\n(.*?)^EOF$', text, re.M | re.S)
        blocks = [block for block in blocks if 'ros__parameters' in block]
        files.update({f'{page.relative_to(REPO)} #{i}': block for i, block in enumerate(blocks)})
    return files


PARAMETER_FILES = {'config/vln.yaml': YAML.read_text(), **documented_parameter_files()}


@pytest.mark.parametrize('name', sorted(PARAMETER_FILES))
def test_every_shipped_and_documented_parameter_file_applies_in_any_namespace(name):
    sections = parameter_file_sections(yaml.safe_load(PARAMETER_FILES[name]))
    assert sections
    for key, values in sections:
        node = key.rsplit('/', 1)[-1]
        assert node in ALL_NODE_PARAMS, key
        assert key.startswith('/**'), f'{name}: {key!r} applies in the root namespace only; key it /**/{node}'
        validate_params(ALL_NODE_PARAMS[node], values)  # and every name in it is real
        for namespace in NAMESPACES:
            fqn = '/'.join((namespace.rstrip('/'), node))
            assert node_key_matches(key, fqn)
            assert not any(node_key_matches(key, '/'.join((namespace.rstrip('/'), other)))
                           for other in ALL_NODE_PARAMS if other != node)
    # a file given to every node (launch's params_file) has a section for each node of the stack, or the
    # controller refuses it (console_node, started only with console:=true, runs on its defaults without one)
    named = {key.rsplit('/', 1)[-1] for key, _ in sections}
    assert {n.name for n in bringup.NODES} <= named <= set(ALL_NODE_PARAMS), name


def test_the_documented_demo_file_holds_what_make_demo_adds():
    [demo] = documented_parameter_files().values()
    values = {key: v for key, v in parameter_file_sections(yaml.safe_load(demo))}
    assert values['/**/camera_node'] == {'input_transport': 'compressed'}
    assert values['/**/inference_node']['backend'] == 'replay'


# -- names and live changes ----------------------------------------------------------------------------

@pytest.mark.parametrize(('name', 'closest'), [
    ('max_linear_X', 'max_linear_x'), ('max_lin_x', 'max_linear_x'), ('rate', 'rate_hz'),
    ('MAX_ANGULAR_Z', 'max_angular_z'), ('goal_tolerance', 'goal_tolerance_m'),
])
def test_an_unknown_name_comes_with_the_closest_real_one(name, closest):
    assert unknown_parameter(name, (s.name for s in param_specs(ControllerParams))) == \
        f"unknown parameter '{name}' (did you mean '{closest}'?)"


def test_a_live_change_gives_a_new_snapshot_and_leaves_the_old_one():
    current = ControllerParams()
    changed = validate_change(current, {'max_linear_x': 0.2})
    assert changed.max_linear_x == 0.2 and current.max_linear_x == 0.5
    assert changed.model_dump() == {**current.model_dump(), 'max_linear_x': 0.2}
    # two parameters that depend on each other change together (SetParametersAtomically)
    both = validate_change(current, {'lookahead_m': 1.0, 'goal_tolerance_m': 0.6})
    assert (both.lookahead_m, both.goal_tolerance_m) == (1.0, 0.6)
    nested = validate_change(CameraParams(), {'keyframe.change_threshold': 0.3})
    assert nested.keyframe.change_threshold == 0.3 and nested.keyframe.min_interval_s == 0.5


@pytest.mark.parametrize(('model', 'changes', 'message'), [
    (ControllerParams, {'max_linear_x': 5.0},
     "parameter 'max_linear_x' = 5.0 is invalid (Input should be less than or equal to 3); "
     'allowed: 0.0 <= float <= 3.0 [m/s]'),
    (ControllerParams, {'max_accel_x': 0.0},  # an exclusive bound, which a ROS descriptor range cannot say
     "parameter 'max_accel_x' = 0.0 is invalid (Input should be greater than 0); allowed: 0.0 < float <= 10.0 [m/s^2]"),
    (ControllerParams, {'max_linear_x': float('nan')}, "parameter 'max_linear_x' = nan is not finite"),
    (ControllerParams, {'goal_tolerance_m': 0.6}, 'goal_tolerance_m (0.6) must be smaller than lookahead_m (0.5)'),
    (CameraParams, {'keyframe.min_interval_s': 9.0}, 'keyframe.min_interval_s (9.0) must not exceed'),
    (InferenceParams, {'history_steps': 300}, "parameter 'history_steps' = 300 is invalid"),
])
def test_an_invalid_live_change_is_refused_with_the_start_up_message(model, changes, message):
    with pytest.raises(ParameterError) as refused:
        validate_change(model(), changes)
    assert str(refused.value).startswith(message)
    with pytest.raises(ParameterError) as at_start:
        validate_params(model, dict(changes))
    assert str(at_start.value) == str(refused.value)


@pytest.mark.parametrize(('model', 'changes', 'message'), [
    (ControllerParams, {'max_linear_x': 1},
     "parameter 'max_linear_x' = 1 is an integer; write it as 1.0 (ROS parameters are typed); "
     'allowed: 0.0 <= float <= 3.0 [m/s]'),
    (ControllerParams, {'publish_zero_forever': 'yes'},
     "parameter 'publish_zero_forever' = 'yes' has type str, expected bool; allowed: true or false"),
    (ControllerParams, {'rate_hz': 20.0},
     "parameter 'rate_hz' is fixed while the node runs (read-only): set it in the parameter file or with -p "
     'and restart the node'),
    (ControllerParams, {'max_speed': 0.1}, "unknown parameter 'max_speed' (did you mean"),
    (CameraParams, {'input_transport': 'compressed'}, "parameter 'input_transport' is fixed while the node runs"),
    (InferenceParams, {'backend': 'openai'}, "parameter 'backend' is fixed while the node runs"),
    (ControllerParams, {'max_linear_x': 0.3, 'rate_hz': 20.0}, "parameter 'rate_hz' is fixed"),  # all or nothing
])
def test_a_live_change_of_a_fixed_unknown_or_mistyped_parameter_is_refused(model, changes, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        validate_change(model(), changes)


def test_what_stays_fixed_while_running():
    fixed = {node: {s.name for s in param_specs(model) if not s.dynamic} for node, model in NODE_PARAMS.items()}
    guard_fixed = {f'guard.{s.name}' for s in param_specs(GuardParams) if not s.dynamic}
    assert fixed['controller_node'] == {'rate_hz', 'cmd_vel_stamped', 'base_frame', 'estop_timeout_s',
                                        'diagnostics_period_s'} | guard_fixed
    # the guard's subscriptions, trust and calibration are fixed; its zones and timeouts are live
    assert {'guard.enabled', 'guard.laser.enabled', 'guard.laser.optional', 'guard.laser.topic',
            'guard.laser.mount.x_m'} <= guard_fixed
    assert not guard_fixed & {'guard.stop_margin_m', 'guard.laser.timeout_s', 'guard.footprint.radius_m'}
    assert fixed['camera_node'] == {'input_transport', 'publish_decisions', 'diagnostics_period_s'}
    assert {'backend', 'model', 'history_max', 'base_frame', 'record_file', 'diagnostics_period_s'} <= \
        fixed['inference_node']
    assert all(name in fixed['inference_node'] for name in (s.name for s in param_specs(InferenceParams))
               if name.startswith(('lmdeploy.', 'openai.', 'replay.')))
    assert not any(name.startswith('parser.') for name in fixed['inference_node'])
