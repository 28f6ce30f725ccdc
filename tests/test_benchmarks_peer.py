"""benchmarks/peer_compare.py without a peer, and table.py on its summary records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, 'benchmarks')
sys.path.insert(0, BENCHMARKS)
import table  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize('flags', [[], ['--peer_python', '/nonexistent/python']])
def test_without_a_peer_one_error_line_and_exit_2(tmp_path, flags):
  # The environment may name a real peer on a developer's machine; this test wants none.
  env = {k: v for k, v in os.environ.items() if k not in ('PEER_PYTHON', 'DTSIP_SRC')}
  if flags:
    flags = flags + ['--peer_src', str(tmp_path)]
  result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, 'peer_compare.py'), *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  lines = (result.stdout + result.stderr).splitlines()
  assert result.returncode == 2, lines
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  assert '../shared/peers/README.md' in lines[0]


def test_table_renders_peer_compare_summary(tmp_path):
  summary = {'benchmark': 'peer_compare', 'config': 'garg_tiny', 'model': 'tiny', 'host': 'vm',
             'platform': 'cpu', 'device_kind': 'cpu', 'cpu_count': 2, 'jax': '0.10.2',
             'time': '2026-12-02T18:00:00', 'rounds': 2, 'peer_steps_per_sec': 6.21,
             'icl_jax_steps_per_sec': 6.795, 'ratio': 1.094, 'peer_rounds': [6.04, 6.38],
             'icl_jax_rounds': [7.45, 6.14]}
  one_round = {'benchmark': 'peer_compare_round', 'config': 'garg_tiny', 'model': 'tiny',
               'round': 2, 'side': 'peer', 'steps_per_sec': 6.38}
  path = tmp_path / 'results.jsonl'
  path.write_text('not a record\n' + json.dumps(one_round) + '\n' + json.dumps(summary) + '\n')
  lines = table.render(table.latest(str(path))).splitlines()
  assert lines[0].startswith('Machine `vm` (2 CPUs, cpu / cpu), jax 0.10.2')
  head = lines.index('| model | rounds | peer steps/s (each round) | icl_jax steps/s (each round) '
                     '| icl_jax / peer |')
  assert lines[head + 1] == '|---|---|---|---|---|'
  assert lines[head + 2] == '| tiny | 2 | 6.21 (6.04, 6.38) | 6.79 (7.45, 6.14) | 1.09x |'
  assert len(lines) == head + 3  # Round records are not rendered.
