r"""Training throughput of named configs: steps/s, examples/s, tokens/s, FLOP/s and MFU.

  python benchmarks/train_throughput.py [--configs garg_tiny,garg_small,gpicl_paper] \
      [--steps 20] [--windows 5] [--budget 30]

Prints one JSON line for the machine's measured matmul peak (fp32 on a CPU, bf16 on an
accelerator; jnp, 2048^2), then one per config: the median and spread of the steady-state
steps/s over several timed windows (compile excluded), examples/s and tokens/s, the model
FLOPs per step counted analytically (6 x matmul parameters x tokens, plus attention's
two S x S products, forward and backward), the achieved FLOP/s and its fraction of the
measured peak (`mfu`).

Every config runs the framework's own step: `train.make_group_step` around
`steps.train_step` on a group of one run, as `icl_jax.main` trains it.
  garg_tiny, garg_small  Garg et al.'s linear regression: d = 20, 41 points interleaved as
                         82 tokens, batch 64, Adam lr 1e-4 (no clipping, no warm-up, no
                         curriculum: the final, largest shapes), GPT-2-style pre-LN
                         Transformer with learned positions, width 64 / 2 layers / 2 heads
                         and width 256 / 4 layers / 4 heads, MLP 4x, one output, MSE.
                         Built from `icl_jax.presets.garg` when this checkout has the
                         regression families; otherwise from the same model and optimizer
                         directly (`"path": "direct"` in the record, clearly not the
                         framework's step).
  gpicl_paper            the GPICL paper's model and batch: width 256, 4 layers, 8 heads of
                         32, T = 100 (the paper's prompt), batch 128, on the embedded 8x8
                         digits (D = 64; MNIST's 784 inputs change only the read-in layer).
`reference_steps_per_sec` is the reference PyTorch implementation of Garg et al. measured
on the calibration machine (fp32 matmul peak 283 GFLOP/s); `vs_reference_at_equal_peak`
scales it to this machine's measured peak.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position

from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position
from icl_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

# The calibration machine's figures from the issue (PyTorch + HF GPT-2, oneDNN, 2 cores).
REFERENCE = {'garg_tiny': 17.3, 'garg_small': 1.55}
REFERENCE_PEAK = 283e9
GARG_SIZES = {'garg_tiny': (64, 2, 2), 'garg_small': (256, 4, 4)}
GARG_DIM, GARG_POINTS, GARG_BATCH, GARG_LR = 20, 41, 64, 1e-4


def has_regression_families() -> bool:
  return 'interleaved' in config_lib.PROMPTS and 'linear' in config_lib.TASK_FAMILIES


def garg_config(name: str) -> ml_collections.ConfigDict:
  """Garg et al.'s linear regression at its final sizes, through the framework's fields."""
  from icl_jax import presets  # pylint: disable=g-import-not-at-top
  width, depth, heads = GARG_SIZES[name]
  c = presets.garg('linear', f'dim={GARG_DIM},points={GARG_POINTS},curriculum=0,'
                             f'lr={GARG_LR},batch_size={GARG_BATCH}')
  c.model.width, c.model.depth, c.model.num_heads = width, depth, heads
  c.model.qkv_size, c.model.mlp_ratio, c.model.positions = width // heads, 4, 'learned'
  c.train.warmup_steps, c.train.grad_clip, c.train.schedule = 0, 0.0, 'constant'
  c.task.num_tasks = -1
  return c


def gpicl_paper_config() -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.data.dataset, c.data.image_shape = 'digits', (8, 8)
  c.task.seq_len, c.task.prompt, c.task.num_tasks = 100, 'gpicl', 2**16
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 256, 4, 8, 32
  c.model.mlp_ratio = 4
  c.train.batch_size, c.train.lr, c.train.eps, c.train.grad_clip = 128, 2e-4, 1e-10, 2.0
  c.train.warmup_steps = 1000
  return c


def model_flops(config: ml_collections.ConfigDict, in_features: int, out_features: int) -> dict:
  """Analytic FLOPs of one training step: 6 N T for the matmuls plus attention's products.

  N counts the weights that multiply every token (read-in, Q/K/V/O, MLP, read-out; not
  biases, norms or the position table). Attention adds QK^T and PV: 2 x 2 S^2 H K per
  sequence and layer forward, three times that with the backward, over the full S x S
  that a dense implementation computes.
  """
  m = config.model
  seq = tasks.num_tokens(config.task.prompt, config.task.seq_len)
  batch = config.train.batch_size
  attn = m.num_heads * m.qkv_size
  per_layer = m.width * 3 * attn + attn * m.width + 2 * m.width * m.mlp_ratio * m.width
  matmul_params = in_features * m.width + m.depth * per_layer + m.width * out_features
  tokens = batch * seq
  attention = 3 * m.depth * batch * 4 * seq * seq * attn
  return {'matmul_params': matmul_params, 'tokens_per_step': tokens,
          'flops_per_step': 6 * matmul_params * tokens + attention}


def framework_step(config: ml_collections.ConfigDict):
  """(step(i) -> metrics, num_features, num_classes): the group step of `icl_jax.train`."""
  config_lib.validate(config, jax.device_count(), 1)
  train_ds, _ = train.load_splits(config)
  mesh = sharding.make_mesh(config.mesh, 1)
  spec = steps_lib.make_spec(config, train_ds.num_features, train_ds.num_classes)
  init, abstract_state, _ = train.state_layout(config, spec, mesh)
  runs = sharding.put(steps_lib.stack_runs([steps_lib.run_values(config)]),
                      sharding.run_sharded(mesh))
  group_sharding = jax.tree.map(lambda _: sharding.run_sharded(mesh), abstract_state)
  state = jax.jit(jax.vmap(init), out_shardings=group_sharding)(runs.init_key)
  x_NxD = sharding.put_replicated(train_ds.x_NxD, mesh)
  y_N = sharding.put_replicated(train_ds.y_N, mesh)
  step = train.make_group_step(config, spec, mesh, abstract_state)
  holder = {'state': state}

  def run(i):
    del i  # The step counter lives in the state.
    holder['state'], metrics = step(holder['state'], runs, x_NxD, y_N)
    return metrics

  return run, spec.num_features + spec.num_classes, spec.num_classes


def direct_garg_step(name: str):
  """Garg's step built from icl_jax.models.Transformer + optax.adam, for checkouts without
  the framework's regression families (labelled `"path": "direct"`)."""
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  width, depth, heads = GARG_SIZES[name]
  d, t, b = GARG_DIM, GARG_POINTS, GARG_BATCH
  model = models.Transformer(d + 1, 1, 2 * t, width=width, depth=depth, num_heads=heads,
                             qkv_size=width // heads, mlp_ratio=4, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  tx = optax.adam(GARG_LR)
  mask_SxS = jnp.tril(jnp.ones((2 * t, 2 * t), bool))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, i):
    key_x, key_w = jax.random.split(jax.random.fold_in(jax.random.key(0), i))
    x_BxTxD = jax.random.normal(key_x, (b, t, d))
    y_BxT = jnp.einsum('btd,bd->bt', x_BxTxD, jax.random.normal(key_w, (b, d)))
    x_tok = jnp.concatenate([x_BxTxD, jnp.zeros((b, t, 1))], -1)
    y_tok = jnp.concatenate([jnp.zeros((b, t, d)), y_BxT[..., None]], -1)
    tokens_BxSxF = jnp.stack([x_tok, y_tok], 2).reshape(b, 2 * t, d + 1)

    def loss_fn(p):
      pred_BxT = nnx.merge(graphdef, p)(tokens_BxSxF, mask_SxS)[:, ::2, 0]
      return jnp.mean(jnp.square(pred_BxT - y_BxT))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  holder = {'p': params, 'o': tx.init(params)}

  def run(i):
    holder['p'], holder['o'], loss = step(holder['p'], holder['o'], jnp.int32(i))
    return loss

  config = config_lib.base_config()
  config.task.seq_len, config.task.prompt = t, 'context_query'  # 2T tokens, like interleaved.
  config.model.width, config.model.depth, config.model.num_heads = width, depth, heads
  config.model.qkv_size, config.model.mlp_ratio = width // heads, 4
  config.train.batch_size = b
  return run, config, d + 1, 1


def measure(name: str, args, peak: float) -> dict:
  path = 'framework'
  if name in GARG_SIZES:
    if has_regression_families():
      config = garg_config(name)
      run, in_features, out_features = framework_step(config)
    else:
      path = 'direct'
      run, config, in_features, out_features = direct_garg_step(name)
  elif name == 'gpicl_paper':
    config = gpicl_paper_config()
    run, in_features, out_features = framework_step(config)
  else:
    raise SystemExit(f'Unknown config {name!r}.')
  rate = common.windows(run, 1, args.steps, args.windows, args.budget)
  flops = model_flops(config, in_features, out_features)
  m = config.model
  record = common.header('train_throughput')
  record.update({
      'config': name, 'path': path,
      'model': f'{m.width}w {m.depth}L {m.num_heads}h x {m.qkv_size}, mlp {m.mlp_ratio}x',
      'batch_size': config.train.batch_size,
      'seq_tokens': tasks.num_tokens(config.task.prompt, config.task.seq_len),
      'in_features': in_features, 'dtype': 'float32',
      'steps_per_sec': rate['median'], 'steps_per_sec_min': rate['min'],
      'steps_per_sec_max': rate['max'], 'windows': rate['windows'],
      'steps_per_window': rate['calls_per_window'],
      'cpu_s_per_step': rate['cpu_s_per_item'],
      'examples_per_sec': rate['median'] * config.train.batch_size,
      'tokens_per_sec': rate['median'] * flops['tokens_per_step'],
      **flops,
      'flops_per_sec': rate['median'] * flops['flops_per_step'],
      'peak_flops_per_sec': peak,
      'mfu': rate['median'] * flops['flops_per_step'] / peak,
  })
  if name in REFERENCE:
    record['reference_steps_per_sec'] = REFERENCE[name]
    record['vs_reference_at_equal_peak'] = (rate['median'] / peak) / (REFERENCE[name] /
                                                                      REFERENCE_PEAK)
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='garg_tiny,garg_small,gpicl_paper')
  parser.add_argument('--steps', type=int, default=20, help='Steps per timed window (at most).')
  parser.add_argument('--windows', type=int, default=5, help='Timed windows per config.')
  parser.add_argument('--budget', type=float, default=None,
                      help='Seconds of timed steps per config (shrinks --steps to fit).')
  parser.add_argument('--peak_n', type=int, default=2048)
  args = parser.parse_args()
  # A busy shared machine lowers any one measurement of the peak: take the best of two,
  # one before and one after the configs, as the machine's capability.
  peak = common.matmul_peak(args.peak_n, common.peak_dtype())
  records = [measure(name, args, peak['flops_per_sec']) for name in args.configs.split(',')]
  later = common.matmul_peak(args.peak_n, common.peak_dtype())
  if later['flops_per_sec'] > peak['flops_per_sec']:
    peak = later
    for r in records:
      r['peak_flops_per_sec'] = peak['flops_per_sec']
      r['mfu'] = r['flops_per_sec'] / peak['flops_per_sec']
      if 'reference_steps_per_sec' in r:
        r['vs_reference_at_equal_peak'] = ((r['steps_per_sec'] / peak['flops_per_sec']) /
                                           (r['reference_steps_per_sec'] / REFERENCE_PEAK))
  record = common.header('matmul_peak')
  record.update(peak)
  common.emit(common.rounded(record))
  for r in records:
    common.emit(common.rounded(r))


if __name__ == '__main__':
  main()
