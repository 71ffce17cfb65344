#!/usr/bin/env python3
"""Check the wheel sets tools/gpu/fetch_wheels.sh made and print their sizes (run by it; any Python 3.9+).

    python3 tools/gpu/check_wheels.py .whl        # sets: .whl/bench (required), .whl/ros (if there)

Fails when a package has two versions (pip stops the whole install), when a requirement of a wheel
(markers taken for CPython 3.12 on Linux x86_64, no extras) is neither in the sets, nor in the GPU image
(tools/gpu/image-packages.txt), nor one of UNNEEDED below, when a set wheel's version does not satisfy a
requirement on it, or when the bench set and the repository together are over one transfer's budget.
"""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[assignment]
    from pip._vendor.packaging.version import Version  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
TRANSFER_MIB = 64      # one call to a lent GPU machine carries at most this, the working tree included
BENCH_BUDGET_MIB = 60  # the bench set and the repository together: below this, for margin
# lmdeploy's declared requirements that its PyTorch engine does not need for Qwen3-VL on the GPU machines.
UNNEEDED = {
    'ray': 'the mp executor is used instead (LMDEPLOY_EXECUTOR_BACKEND=mp, bench/gpu.py --executor mp)',
    'rdkit': 'chemistry models only',
    'flash-linear-attention': 'linear-attention models (Qwen3.5, ...) only',
    'tilelang': 'DeepSeek kernels only',
    'nvidia-nccl-cu12': 'CUDA 12 (TurboMind, stripped); the image has the CUDA 13 ones',
    'nvidia-cuda-runtime-cu12': 'CUDA 12 (TurboMind, stripped)',
    'nvidia-cublas-cu12': 'CUDA 12 (TurboMind, stripped)',
    'nvidia-curand-cu12': 'CUDA 12 (TurboMind, stripped)',
}
TARGET = {'python_version': '3.12', 'python_full_version': '3.12.0', 'sys_platform': 'linux',
          'platform_system': 'Linux', 'platform_machine': 'x86_64', 'os_name': 'posix',
          'implementation_name': 'cpython', 'platform_python_implementation': 'CPython', 'extra': ''}


def wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split('-')[:2]
    return canonicalize_name(name), version


def requirements(path: Path) -> list[Requirement]:
    with zipfile.ZipFile(path) as wheel:
        meta = next(n for n in wheel.namelist() if re.fullmatch(r'[^/]+\.dist-info/METADATA', n))
        text = wheel.read(meta).decode()
    found = []
    for line in text.splitlines():
        if line.startswith('Requires-Dist:'):
            req = Requirement(line.split(':', 1)[1].strip())
            if req.marker is None or req.marker.evaluate(TARGET):
                found.append(req)
    return found


def repo_mib() -> float:
    """What a call carries of the working tree: tracked and untracked files that git does not ignore."""
    names = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b'\0')
    return sum((REPO / n.decode()).stat().st_size for n in names if n and (REPO / n.decode()).is_file()) / MIB


def main(root: Path) -> int:
    sets = {d.name: sorted(d.glob('*.whl')) for d in (root / 'bench', root / 'ros') if d.is_dir()}
    if not sets.get('bench'):
        print(f'no wheels in {root}/bench', file=sys.stderr)
        return 1
    lines = (REPO / 'tools/gpu/image-packages.txt').read_text().splitlines()
    image = {canonicalize_name(line.strip()) for line in lines if line.strip() and not line.startswith('#')}
    failures: list[str] = []
    have: dict[str, tuple[str, str]] = {}  # name -> (version, set)
    for set_name, wheels in sets.items():
        for wheel in wheels:
            name, version = wheel_name_version(wheel)
            if name in have:
                failures.append(f'{name}: {have[name][0]} ({have[name][1]}) and {version} ({set_name})')
            have[name] = (version, set_name)
            if name in image:
                failures.append(f'{name} ({set_name}) is in the image already: two versions of one package')
    for set_name, wheels in sets.items():
        for wheel in wheels:
            for req in requirements(wheel):
                name = canonicalize_name(req.name)
                if name in have:
                    version = have[name][0].split('+')[0]
                    if req.specifier and not req.specifier.contains(Version(version), prereleases=True):
                        failures.append(f'{wheel.name} needs {req}, the set has {version}')
                    if set_name == 'bench' and have[name][1] != 'bench':
                        failures.append(f'{wheel.name} needs {name}, which only the {have[name][1]} set has')
                elif name not in image and name not in UNNEEDED:
                    failures.append(f'{wheel.name} needs {req}: in no set and not in the image')
    sizes = {s: sum(w.stat().st_size for w in ws) / MIB for s, ws in sets.items()}
    tree = repo_mib()
    for set_name, wheels in sets.items():
        print(f'{root}/{set_name}: {len(wheels)} wheels, {sizes[set_name]:.1f} MiB; with the repository '
              f'({tree:.1f} MiB): {sizes[set_name] + tree:.1f} MiB of the {TRANSFER_MIB} MiB one call carries')
    if sizes['bench'] + tree > BENCH_BUDGET_MIB:
        failures.append(f'the bench set and the repository are over {BENCH_BUDGET_MIB} MiB')
    if 'ros' in sizes and sizes['ros'] + tree > BENCH_BUDGET_MIB:
        failures.append(f'the ROS set and the repository are over {BENCH_BUDGET_MIB} MiB')
    print('not sent (lmdeploy declares them): ' + ', '.join(sorted(UNNEEDED)))
    for failure in failures:
        print(f'check_wheels: {failure}', file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / '.whl')))
