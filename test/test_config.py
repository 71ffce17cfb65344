"""core/config: the models, the YAML file and the error messages agree."""
from __future__ import annotations

import configparser
import re

import pytest
from conftest import REPO

from vln_ros.core.config import (
    NODE_PARAMS,
    CameraParams,
    ParameterError,
    load_node_yaml,
    param_specs,
    validate_params,
)

YAML = REPO / 'config' / 'vln.yaml'


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
        assert spec.type is str or spec.type is bool or spec.minimum is not None, spec.name
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
    ({'max_sid_px': 100}, "unknown parameter 'max_sid_px'"),
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


def test_readme_documents_every_parameter_with_its_default():
    readme = (REPO / 'README.md').read_text()
    for node, model in NODE_PARAMS.items():
        # each node's own section: two nodes may share a parameter name (inference_timeout_s)
        section = re.search(rf'^## {node}\n(.*?)(?=^## )', readme, re.M | re.S)
        assert section, f'README has no "## {node}" section'
        for spec in param_specs(model):
            if isinstance(spec.default, bool):
                default = str(spec.default).lower()
            else:
                default = '""' if spec.default == '' else spec.default
            row = re.search(rf'^\| `{re.escape(spec.name)}` \| ([^|]+) \| ([^|]+) \|', section.group(1), re.M)
            assert row, f'{node}: {spec.name} is not in the README parameter table'
            assert row.group(1).strip() == str(default), (spec.name, row.group(1), default)
            assert row.group(2).strip() == spec.allowed(), (spec.name, row.group(2), spec.allowed())
