"""The accelerator path, checked without an accelerator: every compiled program lowers for
CUDA, TPU and ROCm (benchmarks/lowering.py), in float32 and bfloat16, and the CUDA bfloat16
programs hold cuDNN's fused attention while the same programs lower for TPU and ROCm
without it. Lowering compiles nothing, so these stay fast; nothing lowered here runs.

On this CPU host, jax refuses to trace cuDNN's attention (its jaxlib has no cuDNN), so the
tool's documented bypass (`lowering.cudnn_presence_bypass`) stands in for a GPU host's
cuDNN while lowering; the library never bypasses anything.
"""

import functools
import os
import sys

import jax
import numpy as np
import pytest

from helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import lowering  # pylint: disable=g-import-not-at-top,wrong-import-position

from icl_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import presets  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import steps  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import workload  # pylint: disable=g-import-not-at-top,wrong-import-position

ACCELERATORS = ('cuda', 'tpu', 'rocm')
DTYPES = ('float32', 'bfloat16')
FORWARD, BACKWARD = lowering.CUDNN_FORWARD, lowering.CUDNN_BACKWARD
needs_bypass = pytest.mark.skipif(lowering.bypass_supported() is not None,
                                  reason=str(lowering.bypass_supported()))


def tiny(data_dir, dtype, **overrides):
  # The paper's causal prompt, where 'auto' attention may take cuDNN; heads of 8 (cuDNN's
  # head sizes are multiples of 8).
  return tiny_config(data_dir, task__prompt='gpicl', model__dtype=dtype, **overrides)


@pytest.fixture(scope='module')
def lowered(data_dir):
  """{dtype: {platform: record}}: every program of the tiny config, each traced once and
  lowered for every platform, on the 8 simulated devices (one run on a data axis of 8; a
  group of 2 runs on run 2 x data 4)."""
  return {dtype: lowering.check(tiny(data_dir, dtype), ACCELERATORS + ('cpu',))
          for dtype in DTYPES}


@pytest.mark.parametrize('platform', ACCELERATORS + ('cpu',))
@pytest.mark.parametrize('dtype', DTYPES)
def test_every_program_lowers(lowered, dtype, platform):
  record = lowered[dtype][platform]
  assert set(record['programs']) == set(lowering.PROGRAMS)
  failed = {k: r['error'] for k, r in record['programs'].items() if not r['lowered']}
  assert not failed and record['lowered'], failed
  for result in record['programs'].values():
    assert result['top_level_ops'] > 0 and result['ops'] >= result['top_level_ops']
    assert result['flops'] > 0 and result['bytes_accessed'] > 0


@needs_bypass
def test_sharded_cuda_bfloat16_programs_partition_cudnns_attention(lowered):
  """On 8 devices jax wraps each cuDNN attention call in CustomSPMDPartitioning (its
  partitioner places the call per device when the program compiles): a forward and a
  backward in each layer of the steps, a forward in the evaluation and the logits."""
  calls = {k: r['custom_calls'] for k, r in lowered['bfloat16']['cuda']['programs'].items()}
  partitioned = 'CustomSPMDPartitioning'
  for name in ('train_step', 'group_vmap', 'group_map'):
    assert calls[name] == {partitioned: 2}, (name, calls[name])
  assert calls['evaluate'] == {partitioned: 1}  # Its episodes are split over `data`.
  assert calls['logits'] == {FORWARD: 1}  # icl_jax.load's: unsharded, one device's program.
  assert calls['sample'] == {}


def test_other_platforms_and_float32_hold_no_cudnn(lowered):
  for dtype, platform in [('bfloat16', 'tpu'), ('bfloat16', 'rocm'), ('bfloat16', 'cpu'),
                          ('float32', 'cuda'), ('float32', 'tpu'), ('float32', 'rocm')]:
    for name, result in lowered[dtype][platform]['programs'].items():
      assert result['custom_calls'] == {}, (dtype, platform, name)


@needs_bypass
def test_one_device_cuda_bfloat16_programs_hold_cudnns_fused_attention(data_dir):
  """On one device (the mesh of a single GPU) the calls themselves: cuDNN's fused forward
  and backward in the steps (a group of 2 runs on that device, vmapped or mapped), the
  forward alone in the evaluation and the logits; TPU and ROCm lower the same programs
  without them."""
  config = tiny(data_dir, 'bfloat16', mesh__data=1, mesh__run=1)
  record = lowering.check(config, ACCELERATORS)
  calls = {k: r['custom_calls'] for k, r in record['cuda']['programs'].items()}
  for name in ('train_step', 'group_vmap', 'group_map'):
    assert calls[name] == {FORWARD: 1, BACKWARD: 1}, (name, calls[name])
  assert calls['evaluate'] == calls['logits'] == {FORWARD: 1}
  assert calls['sample'] == {}
  for platform in ('tpu', 'rocm'):
    assert record[platform]['lowered'], record[platform]
    assert all(r['custom_calls'] == {} for r in record[platform]['programs'].values())


@needs_bypass
def test_the_papers_bfloat16_step_holds_cudnn_for_cuda_and_lowers_without_it_elsewhere(
    data_dir):
  """experiments/gpicl_mnist.py (width 256, 4 layers, 8 heads, T = 100, batch 128) at the
  embedded digits resized to MNIST's 28x28, as the benchmarks build it."""
  config = presets.gpicl_mnist()
  config.data.dataset, config.data.image_shape, config.data.data_dir = 'digits', (28, 28), (
      data_dir)
  config.model.dtype = 'bfloat16'
  config.mesh.data = 1  # One GPU's program (on several devices see the test above).
  record = lowering.check(config, ACCELERATORS, ('train_step',))
  step = {p: record[p]['programs']['train_step'] for p in ACCELERATORS}
  assert all(s['lowered'] for s in step.values()), step
  assert step['cuda']['custom_calls'] == {FORWARD: 4, BACKWARD: 4}
  assert step['tpu']['custom_calls'] == step['rocm']['custom_calls'] == {}


@needs_bypass
def test_a_program_holding_the_cudnn_branch_runs_the_cpus_attention_bit_for_bit(data_dir):
  """With cuDNN's branch staged out (platform_dependent), the CPU keeps the XLA attention it
  always ran: three bfloat16 steps end with the very parameters of the program without it."""
  config = tiny(data_dir, 'bfloat16')
  wl = workload.build(config)
  mesh = sharding.make_mesh(config.mesh)
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  x_NxD, y_N = wl.training_inputs(mesh)
  q = jax.ShapeDtypeStruct((2, 10, 2, 8), np.dtype('bfloat16'))
  params, texts = [], []
  for bypass in (False, True):
    with lowering.cudnn_presence_bypass() if bypass else _nothing():
      assert (models.transformer.cudnn_refusal(q) is None) == bypass
      step = jax.jit(functools.partial(steps.train_step, spec=wl.spec))
      state = jax.jit(wl.init)(run)
      texts.append(str(step.trace(state, run, x_NxD, y_N).jaxpr))
      for _ in range(3):
        state, _ = step(state, run, x_NxD, y_N)
    params.append(jax.device_get(state['params']))
  # The cuDNN branch is staged out (for lowering to prune on the CPU) only with the bypass.
  assert 'platform_index' in texts[1] and 'platform_index' not in texts[0]
  jax.tree.map(np.testing.assert_array_equal, *params)
  # The bypass is confined to its context: jax's own check is back.
  assert models.transformer.cudnn_refusal(q) is not None


class _nothing:

  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False
