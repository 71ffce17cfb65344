"""Generated files: config/vln.yaml, the node pages' parameter tables, the launch-argument table and the
layout are what tools/gen_docs.py writes; a backend registered in its own module shows up in the parameters,
the launch choices and the docs by itself, and a new module or folder in the layout."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, load_tool

gen_docs = load_tool('gen_docs')


@pytest.mark.parametrize('path', sorted(gen_docs.generated(), key=str), ids=lambda p: p.name)
def test_committed_files_are_what_make_docs_writes(path):
    expected = gen_docs.generated()[path]
    assert path.read_text() == expected, f'{path.relative_to(REPO)} is out of date: run make docs'


def test_the_output_is_deterministic():
    assert gen_docs.generated() == gen_docs.generated()


def test_every_node_has_its_page_with_its_parameter_table_and_its_yaml_section():
    yaml_text = gen_docs.render_yaml()
    for node in gen_docs.ALL_NODE_PARAMS:
        page = REPO / 'docs' / 'nodes' / f'{node}.md'
        assert f'<!-- generated: {node} parameters -->\n| parameter | default |' in page.read_text(), node
        assert f'\n/**/{node}:\n  ros__parameters:\n' in yaml_text, node
    assert '    camera:\n      rate_hz: 10.0                 # [Hz]\n' in yaml_text  # sim_node's, no docstring


def test_the_layout_lists_each_module_with_the_first_sentence_of_its_docstring(tmp_path):
    (tmp_path / 'vln_ros' / 'core').mkdir(parents=True)
    (tmp_path / 'vln_ros' / 'core' / '__init__.py').write_text('"""The core. More words."""\n')
    (tmp_path / 'vln_ros' / 'core' / 'guard.py').write_text('"""The collision guard: zones.\n\nDetails."""\n')
    (tmp_path / 'msg').mkdir()
    (tmp_path / 'msg' / 'Zone.msg').write_text('# One zone of the guard. Second sentence.\nfloat32 d\n')
    files = ['vln_ros/core/__init__.py', 'vln_ros/core/guard.py', 'msg/Zone.msg']
    assert gen_docs.layout_rows(files, tmp_path) == [
        ('vln_ros/', gen_docs.TOP['vln_ros']), ('vln_ros/core/', 'The core.'),
        ('vln_ros/core/guard.py', 'The collision guard: zones.'),
        ('msg/', gen_docs.TOP['msg']), ('msg/Zone.msg', 'One zone of the guard.')]


def test_a_module_without_a_docstring_or_an_undescribed_top_level_entry_stops_make_docs(tmp_path):
    (tmp_path / 'vln_ros').mkdir()
    (tmp_path / 'vln_ros' / 'quiet.py').write_text('x = 1\n')
    with pytest.raises(ValueError, match='quiet.py has no docstring'):
        gen_docs.layout_rows(['vln_ros/quiet.py'], tmp_path)
    with pytest.raises(ValueError, match='describe scratch in TOP'):
        gen_docs.layout_rows(['scratch/notes.txt'], tmp_path)


@pytest.mark.parametrize(('value', 'text'), [
    (True, 'true'), (0, '0'), (1.0, '1.0'), ('', '""'), ('base_link', 'base_link'), ('true', '"true"'),
    ('1.5', '"1.5"'), ('a: b', '"a: b"'), ('http://localhost:23333/v1', 'http://localhost:23333/v1'),
])
def test_yaml_values_keep_their_ros_type(value, text):
    assert gen_docs.yaml_scalar(value) == text


NEW_BACKEND = '''
from vln_ros.core.backends.registry import BackendSpec, register_backend
from vln_ros.core.schema import BackendParams, param


class EchoParams(BackendParams):
    """Echoes the prompt (backend: echo)."""

    prefix: str = param('echo', 'Put in front of every answer')
    delay_s: float = param(0.5, 'Wait this long before answering', 's', gt=0.0, le=5.0)


register_backend(BackendSpec('echo', 'the prompt back', EchoParams, lambda section, params: None))
'''

CHECK = '''
import echo_backend  # its own file; in the package this is the one line in backends/__init__.py
from vln_ros import bringup
from vln_ros.core.config import InferenceParams, param_specs, validate_params
import gen_docs

specs = {s.name: s for s in param_specs(InferenceParams)}
assert specs['backend'].choices == ('lmdeploy', 'openai', 'oracle', 'replay', 'echo'), specs['backend'].choices
assert specs['backend'].description.endswith('; echo: the prompt back'), specs['backend'].description
assert specs['echo.delay_s'].allowed() == '0.0 < float <= 5.0 [s]'
assert validate_params(InferenceParams, {'backend': 'echo', 'echo.prefix': 'x'}).echo.prefix == 'x'
assert bringup.BACKENDS == ('lmdeploy', 'openai', 'oracle', 'replay', 'echo'), bringup.BACKENDS
assert bringup.parse_args(bringup.StackArgs, {'backend': 'echo'}).backend == 'echo'
yaml_text = gen_docs.render_yaml()
assert '    echo:\\n      prefix: echo\\n      delay_s: 0.5                  # [s]\\n' in yaml_text, yaml_text
tables = gen_docs.readme_tables()
assert '| `echo.delay_s` | 0.5 | 0.0 < float <= 5.0 [s] | no | Wait this long before answering |' in (
    tables['inference_node parameters'])
assert 'lmdeploy, openai, oracle, replay, echo' in tables['launch arguments']
'''


def test_a_backend_registered_in_its_own_module_appears_everywhere(tmp_path):
    """In a fresh interpreter: the module registers before config is imported, as the package's do."""
    (tmp_path / 'echo_backend.py').write_text(NEW_BACKEND)
    env_path = [str(tmp_path), str(REPO / 'tools'), *sys.path]
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(CHECK)], capture_output=True, text=True,
                            env={**os.environ, 'PYTHONPATH': os.pathsep.join(env_path)}, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
