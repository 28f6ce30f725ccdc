r"""Lowers the project's compiled programs for a platform this host does not have.

  python benchmarks/lowering.py --platform cuda --config gpicl_mnist --dtype bfloat16
  python benchmarks/lowering.py --platform tpu --config gpicl_digits:smoke --programs all
  python benchmarks/lowering.py --platform rocm --config garg_linear --runs 16 \
      --programs group_vmap

Prints one JSON object: the platform, the config (EXPERIMENT[:args], a shipped name or a
path, with --dtype setting config.model.dtype), whether every program lowered, and per
program (--programs, comma-separated, or `all`):
  lowered         whether jit(...).trace(...).lower(lowering_platforms=(PLATFORM,)) worked;
                  `error` says why not
  custom_calls    {call target: count} over the whole module, e.g. cuDNN's fused attention
                  `__cudnn$fmhaSoftmax` (forward) and `__cudnn$fmhaSoftmaxBackward`. On a
                  mesh of several devices jax wraps each of them in a
                  `CustomSPMDPartitioning` call instead, whose partitioner places the cuDNN
                  call when the program compiles; a mesh of one device (this host without
                  --xla_force_host_platform_device_count) shows the calls themselves
  top_level_ops   operations in the module's main function (control flow counts once);
                  `ops`: every operation of the module, nested regions included
  flops, bytes_accessed  XLA's cost analysis of the lowered (unoptimised) module, by the
                  host's cost model: custom calls (cuDNN's attention) count nothing, and
                  bytes are those of the unfused program, an upper bound
The programs (`PROGRAMS`): the single-run training step (steps.train_step, jit-ed as
training jits it), a sweep group's step in both strategies (group.make_group_step, `vmap`
and `map`), the evaluation forward (Evaluator.model_scores), the sampler (Spec.sample) and
icl_jax.load's logits (api._logits). A dataset this host has not prepared (mnist) stands in
as the embedded digits resized to the config's image shape, as the benchmarks do: lowering
needs shapes, not data.

Lowering for CUDA off a GPU. jax checks while tracing that the host's jaxlib has cuDNN
before it stages out cuDNN's attention, so on this CPU host model.attention='auto' keeps
XLA's attention even for CUDA (models/transformer.py, `cudnn_refusal`). To see the program
a GPU host would lower, this tool (and tests/test_lowering.py) replaces that one check,
jax._src.cudnn.fused_attention_stablehlo.check_cudnn_version, by a stub that reports
cuDNN 9.10, for the duration of the lowering only (`cudnn_presence_bypass`). It is private
JAX API, so it is applied only to the jax versions it was checked with (BYPASS_JAX); the
library never does this. Nothing lowered this way runs: the module is only inspected.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import sys
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position  (icl_jax from this checkout)
import jax
import ml_collections

from icl_jax import api
from icl_jax import config as config_lib
from icl_jax import data
from icl_jax import evaluator as evaluator_lib
from icl_jax import sharding
from icl_jax import steps
from icl_jax import experiment
from icl_jax import tasks
from icl_jax import workload as workload_lib
from icl_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

PLATFORMS = ('cuda', 'tpu', 'rocm', 'cpu')
PROGRAMS = ('train_step', 'group_vmap', 'group_map', 'evaluate', 'sample', 'logits')
CUDNN_FORWARD, CUDNN_BACKWARD = '__cudnn$fmhaSoftmax', '__cudnn$fmhaSoftmaxBackward'
# jax versions (major, minor) whose cuDNN presence check is the one function replaced by
# `cudnn_presence_bypass` (checked with 0.10.2: nothing else asks for a GPU while tracing).
BYPASS_JAX = ((0, 8), (0, 9), (0, 10))
ASSUMED_CUDNN_VERSION = 91000  # cuDNN 9.10, as jax encodes it: what the stub reports.


# =======================================================================================
# The one bypass of JAX's GPU presence check (lowering only; see the module docstring)
# =======================================================================================
def bypass_supported() -> str | None:
  """Why the bypass is not applied to this jax, or None if it is."""
  version = tuple(int(p) for p in jax.__version__.split('.')[:2])
  if version not in BYPASS_JAX:
    return (f'jax {jax.__version__} is not among the versions the cuDNN presence bypass was '
            f'checked with ({", ".join(f"{a}.{b}" for a, b in BYPASS_JAX)})')
  return None


@contextlib.contextmanager
def cudnn_presence_bypass():
  """Within: jax traces cuDNN's attention on a host without cuDNN (for lowering only).
  Yields None, or why nothing was replaced (another jax version)."""
  reason = bypass_supported()
  if reason:
    yield reason
    return
  # Private JAX, confined here: the check reads the CUDA plugin's cuDNN version.
  # pylint: disable-next=g-import-not-at-top
  from jax._src.cudnn import fused_attention_stablehlo as fused
  original = fused.check_cudnn_version
  fused.check_cudnn_version = lambda: ASSUMED_CUDNN_VERSION
  try:
    yield None
  finally:
    fused.check_cudnn_version = original


# =======================================================================================
# The programs, built as training, evaluation and icl_jax.load build them
# =======================================================================================
def load_config(config_arg: str, dtype: str | None = None) -> ml_collections.ConfigDict:
  """The config of EXPERIMENT[:args] (a shipped name or a path), with model.dtype = dtype."""
  path, arg = experiment.split_config_arg(experiment.resolve_config_arg(config_arg))
  config = experiment.load_module(path).get_config(arg)
  if dtype:
    config.model.dtype = dtype
  return config


def splits(config: ml_collections.ConfigDict) -> tuple[data.Dataset, data.Dataset] | None:
  """None (load the config's own data) where it is prepared or not needed; else the embedded
  digits resized to the config's image shape, in its place."""
  if not tasks.FAMILIES[config.task.family].reads_dataset:
    return None
  dc = config.data
  try:
    return tuple(data.load(dc.dataset, split, tuple(dc.image_shape), dc.data_dir)
                 for split in (dc.train_split, dc.eval_split))
  except UserError:
    return tuple(data.load('digits', split, tuple(dc.image_shape), dc.data_dir)
                 for split in ('train', 'test'))


def group_step(wl: workload_lib.Workload, mesh: jax.sharding.Mesh, strategy: str) -> Callable:
  """The jit-ed step of a sweep group, as training makes it (icl_jax/group.py)."""
  from icl_jax import group as group_lib  # pylint: disable=g-import-not-at-top
  return group_lib.make_group_step(wl, mesh, strategy)


def programs(config: ml_collections.ConfigDict, names=PROGRAMS, num_runs: int = 2,
             wl: workload_lib.Workload | None = None) -> dict[str, tuple[Callable, tuple]]:
  """{name: (jit-ed function, its arguments)} for the programs `names`. Arguments are
  abstract (ShapeDtypeStruct) where they are large (states, parameters, episodes)."""
  config_lib.validate(config)
  wl = wl or workload_lib.build(config, splits(config))
  spec, out = wl.spec, {}
  mesh = sharding.make_mesh(config.mesh)
  run = steps.run_values(config)
  x_NxD, y_N = wl.training_inputs(mesh)
  batch = config.train.batch_size
  episode = jax.eval_shape(lambda key: spec.sample(key, run, x_NxD, y_N, batch),
                           jax.random.key(0))
  params = wl.abstract_state['params']
  if 'train_step' in names:
    out['train_step'] = (jax.jit(functools.partial(
        steps.train_step, spec=spec, batch_sharding=sharding.batch_sharded(mesh))),
                         (wl.abstract_state, run, x_NxD, y_N))
  for strategy in ('vmap', 'map'):
    if f'group_{strategy}' in names:
      group_mesh = sharding.make_mesh(config.mesh, num_runs)
      slots = sharding.padded_runs(num_runs, group_mesh.shape[sharding.RUN])
      runs = steps.stack_runs([steps.run_values(config)] * slots)
      state = jax.eval_shape(jax.vmap(wl.init), runs)
      out[f'group_{strategy}'] = (group_step(wl, group_mesh, strategy),
                                  (state, runs, *wl.training_inputs(group_mesh)))
  if 'evaluate' in names:
    sets = evaluator_lib.make_eval_sets(wl, mesh)
    ev = evaluator_lib.Evaluator(wl, mesh, sets, config.eval.num_episodes)
    scored = jax.eval_shape(lambda key: spec.sample(key, run, x_NxD, y_N, ev.chunk),
                            jax.random.key(0))
    out['evaluate'] = (ev.model_scores, (params, scored))
  if 'sample' in names:
    out['sample'] = (jax.jit(lambda key, run, x, y: spec.sample(key, run, x, y, batch)),
                     (jax.random.key(0), run, x_NxD, y_N))
  if 'logits' in names:
    logits = api._logits  # pylint: disable=protected-access  (icl_jax.load's compiled program)
    out['logits'] = (functools.partial(logits, spec), (params, episode))
  return out


# =======================================================================================
# Lowering and what the lowered module holds
# =======================================================================================
def trace(fn: Callable, args: tuple) -> jax.stages.Traced:
  if isinstance(fn, functools.partial):  # api._logits takes its Spec as a static argument.
    return fn.func.trace(*fn.args, *args)
  return fn.trace(*args)


def analyze(lowered: jax.stages.Lowered) -> dict[str, Any]:
  """Custom calls with counts, operation counts, and the cost analysis where available."""
  module = lowered.compiler_ir('stablehlo')
  calls: collections.Counter = collections.Counter()
  total = 0
  top_level = 0

  def walk(op):
    nonlocal total
    for region in op.regions:
      for block in region.blocks:
        for inner in block.operations:
          total += 1
          if inner.operation.name == 'stablehlo.custom_call':
            calls[str(inner.attributes['call_target_name']).strip('"')] += 1
          walk(inner)

  for func in module.body.operations:
    if str(func.attributes['sym_name']).strip('"') == 'main':
      top_level = len(func.regions[0].blocks[0].operations)
    walk(func)
  out: dict[str, Any] = {'custom_calls': dict(sorted(calls.items())),
                         'top_level_ops': top_level, 'ops': total}
  try:
    cost = lowered.cost_analysis() or {}
    out.update(flops=cost.get('flops'), bytes_accessed=cost.get('bytes accessed'))
  except Exception as e:  # pylint: disable=broad-except  (a backend without a cost model)
    out.update(flops=None, bytes_accessed=None, cost_error=f'{type(e).__name__}: {e}'[:300])
  return out


def check(config: ml_collections.ConfigDict, platforms=('cuda',), names=PROGRAMS,
          num_runs: int = 2) -> dict[str, dict[str, Any]]:
  """{platform: {'lowered': all lowered, 'programs': {name: result}}}, each program traced
  once and lowered for every platform, with `cudnn_presence_bypass` around both."""
  out = {p: {'programs': {}} for p in platforms}
  with cudnn_presence_bypass() as not_applied:
    for name, (fn, args) in programs(config, names, num_runs).items():
      try:
        traced = trace(fn, args)
      except Exception as e:  # pylint: disable=broad-except  (reported, not raised)
        traced, error = None, f'{type(e).__name__}: {e}'[:2000]
      for platform in platforms:
        try:
          if traced is None:
            raise RuntimeError(f'tracing failed: {error}')
          lowered = traced.lower(lowering_platforms=(platform,))
          result = {'lowered': True, **analyze(lowered)}
        except Exception as e:  # pylint: disable=broad-except
          result = {'lowered': False, 'error': f'{type(e).__name__}: {e}'[:2000]}
        out[platform]['programs'][name] = result
  for record in out.values():
    record['lowered'] = all(r['lowered'] for r in record['programs'].values())
    record['cudnn_presence_bypass'] = not_applied or (
        f'applied (the stub reports cuDNN {ASSUMED_CUDNN_VERSION})')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--platform', required=True, choices=PLATFORMS)
  parser.add_argument('--config', required=True, help='EXPERIMENT[:args], e.g. gpicl_mnist.')
  parser.add_argument('--dtype', default=None, help='config.model.dtype, e.g. bfloat16.')
  parser.add_argument('--programs', default='train_step',
                      help=f'Comma-separated subset of {PROGRAMS}, or all.')
  parser.add_argument('--runs', type=int, default=2, help='Runs in a group step.')
  args = parser.parse_args(argv)
  names = PROGRAMS if args.programs == 'all' else tuple(args.programs.split(','))
  unknown = sorted(set(names) - set(PROGRAMS))
  if unknown:
    parser.error(f'unknown program(s) {unknown}; choose from {PROGRAMS} or all')
  try:
    config = load_config(args.config, args.dtype)
    record = check(config, (args.platform,), names, args.runs)[args.platform]
  except UserError as e:
    print(json.dumps({'platform': args.platform, 'config': args.config, 'lowered': False,
                      'error': str(e)}))
    return 2
  m = config.model
  print(json.dumps({'platform': args.platform, 'config': args.config,
                    'dtype': m.get('dtype', 'float32'), 'attention': m.get('attention'),
                    'jax': jax.__version__, 'host_backend': jax.default_backend(),
                    **record}))
  return 0 if record['lowered'] else 1


if __name__ == '__main__':
  sys.exit(main())
