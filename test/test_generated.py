"""Generated files: config/vln.yaml and the README tables are what tools/gen_docs.py writes, and a backend
registered in its own module shows up in the parameters, the launch choices and the docs by itself."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

TOOL = REPO / 'tools' / 'gen_docs.py'


def load_gen_docs():
    # tools/ is not a package (it does not ship): load the tool from its file.
    spec = importlib.util.spec_from_file_location('gen_docs', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = load_gen_docs()


@pytest.mark.parametrize('path', sorted(gen_docs.generated(), key=str), ids=lambda p: p.name)
def test_committed_files_are_what_make_docs_writes(path):
    expected = gen_docs.generated()[path]
    assert path.read_text() == expected, f'{path.relative_to(REPO)} is out of date: run make docs'


def test_the_output_is_deterministic():
    assert gen_docs.generated() == gen_docs.generated()


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
    env_path = [str(tmp_path), str(TOOL.parent), *sys.path]
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(CHECK)], capture_output=True, text=True,
                            env={**os.environ, 'PYTHONPATH': os.pathsep.join(env_path)}, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
