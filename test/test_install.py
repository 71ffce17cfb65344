"""The install steps a newcomer meets first: what `make demo` and `make test` install, and the launch tools' check."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_dry_run(target: str) -> str:
    """The commands `make <target>` would run (make -n runs none of them)."""
    return subprocess.run(['make', '-n', '-C', str(REPO), target], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def test_make_demo_installs_no_browser_and_make_test_and_bench_do() -> None:
    assert 'VLN_ROS_INSTALL=demo tools/install.sh' in make_dry_run('demo')   # no test, lint or launch tools
    assert 'VLN_ROS_INSTALL=demo tools/install.sh' in make_dry_run('eval')
    assert 'install_browser.sh' not in make_dry_run('demo')
    assert 'VLN_ROS_INSTALL' not in make_dry_run('test')
    assert 'install_browser.sh' in make_dry_run('test')
    assert 'install_browser.sh' in make_dry_run('bench')


def test_install_without_the_launch_tools_or_github_stops_at_once_and_names_the_fix(tmp_path: Path) -> None:
    """No wheel folder and GitHub unreachable (here: redirected to a closed local port): one clear error before
    anything is built, instead of failing minutes later in pip's git clone."""
    venv = tmp_path / 'venv'
    env = {**os.environ, 'VLN_ROS_PREFIX': str(venv), 'VLN_ROS_ROS2_TOOLS': 'git',
           'GIT_CONFIG_COUNT': '1', 'GIT_CONFIG_KEY_0': 'url.http://127.0.0.1:9/.insteadOf',
           'GIT_CONFIG_VALUE_0': 'https://github.com/'}
    result = subprocess.run([str(REPO / 'tools' / 'install.sh')], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'VLN_ROS_ROS2_TOOLS' in result.stderr and 'shared/ros2-tools' in result.stderr, result.stderr
    assert not venv.exists(), 'install.sh created the venv before finding that the launch tools cannot be had'


# setup.cfg's runtime requirements (the venv world) and their rosdep keys in package.xml (the colcon world).
ROSDEP_KEYS = {'numpy': 'python3-numpy', 'opencv-python-headless': 'python3-opencv', 'pillow': 'python3-pil',
               'pydantic': 'python3-pydantic', 'pyyaml': 'python3-yaml', 'aiohttp': 'python3-aiohttp'}


def install_requires() -> set[str]:
    import configparser
    import re
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    lines = config['options']['install_requires'].split()
    return {re.split(r'[<>=!~]', line)[0].lower() for line in lines if line}


def test_every_runtime_dependency_reaches_a_colcon_install_through_rosdep_or_the_documented_pip_line() -> None:
    """On an apt robot `rosdep install` reads package.xml; what rosdep has no key for must be on the quickstart's
    pip line (console_node once failed to import there: aiohttp was in neither)."""
    import xml.etree.ElementTree as ET
    exec_depends = {e.text for e in ET.parse(REPO / 'package.xml').getroot().iter('exec_depend')}
    pip_lines = [line for md in [REPO / 'README.md', *sorted((REPO / 'docs').rglob('*.md'))]
                 for line in md.read_text().splitlines() if line.startswith('pip install rosbags')]
    assert len(pip_lines) >= 1, 'no quickstart line `pip install rosbags ...` in README.md or docs/'
    pip_named = set(pip_lines[0].split('#')[0].split()[2:])
    for requirement in install_requires():
        if requirement in ROSDEP_KEYS:
            key = ROSDEP_KEYS[requirement]
            assert key in exec_depends, f'package.xml lacks <exec_depend>{key}</exec_depend>'
        else:
            assert requirement in pip_named, \
                f'{requirement} is neither a rosdep key in package.xml nor on {pip_lines[0]!r}'
