"""The config schema: every field declared once, with its default, its policy, its check
and its meaning. No JAX here: the launcher's dry run and the report read it too.

Everything else derives from `FIELDS`: `config.base_config()` (the defaults experiment
files start from), `config.validate()` (each field's check, then the rules that relate
fields, then the checks the task family's and the model's registry entries carry), the
policies in `fields.py` (which fields may differ within a group, change on resume, name a
workdir) and the documentation's config reference (`markdown_table`, docs/config.md).

Policies:
  VALUE      may differ between the runs of one vmapped group: it reaches the step as an
             array (`hparam` names it in `steps.Run.hparams`; the seed makes the keys);
  STATIC     everything a compiled program is built from: runs share a program only if
             these agree, and a resumed run may not change them;
  RESUMABLE  a resumed run may change it: it alters how long a run trains and what it
             reports, not what it learns from step to step.
A field added after sweeps began naming workdirs by hash declares `legacy`: the value that
reproduces what ran before it existed. A stored config without it restores with that
value, and at that value it stays out of a workdir's hash, so relaunching those sweeps
finds their points again.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

VALUE, STATIC, RESUMABLE = 'value', 'static', 'resumable'
INFINITE_TASKS = -1  # config.task.num_tasks for a fresh task per episode.
# Training runs in float32: a larger value becomes inf, a positive one below the smallest
# normal float32 may become 0 (accelerators flush subnormals), e.g. Adam's eps.
F32_MIN, F32_MAX = 1.1754943508222875e-38, 3.4028234663852886e38
_MISSING = object()
# Fields of these sections that this version does not know (written by a newer one)
# take the section's policy: every evaluation and mesh field is resumable.
SECTION_POLICY = {'eval': RESUMABLE, 'mesh': RESUMABLE}

# A check takes the value and returns None, or the problem and its fix (one line).
Check = Callable[[Any], 'str | None']


def is_number(x: Any) -> bool:
  """An int or a float; bool is an int in Python, but never a valid number here."""
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def is_count(x: Any, minimum: int = 1) -> bool:
  """Sizes and step counts index int32 arrays (XLA dimensions, the step counter, fold_in
  data), so anything from 2**31 up would fail deep inside XLA instead of here."""
  return is_int(x) and minimum <= x < 2**31


@dataclasses.dataclass(frozen=True)
class Field:
  path: str  # 'train.lr'
  default: Any
  doc: str  # What it means, for the config reference.
  check: Callable[[str, Any], str | None] | None = None  # (path, value) -> problem or None.
  policy: str = STATIC
  hparam: str | None = None  # Its name in steps.Run.hparams (VALUE fields that reach the step).
  legacy: Any = _MISSING  # The value that reproduces runs from before the field existed.
  # Checked only where this holds of the config ('synthetic': a family that draws its own
  # inputs; None: always).
  when: str | None = None
  type: type | None = None  # For a None default: the type an override must have.

  @property
  def added(self) -> bool:
    return self.legacy is not _MISSING


# ---------------------------------------------------------------------------------------
# Checks: each returns the one-line message for a bad value.
# ---------------------------------------------------------------------------------------
def count(minimum: int = 1) -> Callable[[str, Any], str | None]:
  return lambda path, v: None if is_count(v, minimum) else (
      f'config.{path} must be an integer in [{minimum}, 2**31), got {v!r}.')


def positive_finite(path: str, v: Any) -> str | None:
  if is_number(v) and 0 < v < F32_MAX:
    return None
  return f'config.{path} must be a finite number > 0, got {v!r}.'


def finite(path: str, v: Any) -> str | None:
  if is_number(v) and math.isfinite(v):
    return None
  return f'config.{path} must be a finite number, got {v!r}.'


def unit_interval(closed: bool) -> Callable[[str, Any], str | None]:
  top = ']' if closed else ')'
  return lambda path, v: None if is_number(v) and 0.0 <= v and (
      v <= 1.0 if closed else v < 1.0) else f'config.{path} must be a number in [0, 1{top}, got {v!r}.'


def optimizer_rate(path: str, v: Any) -> str | None:
  if is_number(v) and math.isfinite(v) and F32_MIN <= v <= F32_MAX:
    return None
  return (f'config.{path} must be a finite number > 0 (in float32: between {F32_MIN:.3g} and '
          f'{F32_MAX:.3g}), got {v!r}.')


def one_of(choices: Callable[[], tuple]) -> Callable[[str, Any], str | None]:
  """A value among `choices()` (a registry, read when checked: registries import JAX)."""
  return lambda path, v: None if v in choices() else (
      f'config.{path}={v!r} is unknown; choose one of {tuple(choices())}.')


def device_count(path: str, v: Any) -> str | None:
  if is_int(v) and (v >= 1 or v == -1):
    return None
  return f'config.{path} must be a device count >= 1, or -1 to fill it; got {v!r}.'


def _seed(path: str, v: Any) -> str | None:
  # jax.random.key takes a signed 64-bit seed; a larger one fails deep inside JAX.
  if is_int(v) and -2**63 <= v < 2**63:
    return None
  return f'config.{path} must be an integer in [-2**63, 2**63), got {v!r}.'


def _dataset(path: str, v: Any) -> str | None:
  if isinstance(v, str) and v:
    return None
  return (f'config.{path} must be a TFDS dataset name like \'digits\', or folder:PATH / '
          f'npz:PATH; got {v!r}.')


def _image_shape(path: str, v: Any) -> str | None:
  if isinstance(v, (tuple, list)) and len(v) == 2 and all(is_count(s) for s in v):
    return None
  return f'config.{path} must be two positive integers like (8, 8), got {v!r}.'


def _num_tasks(path: str, v: Any) -> str | None:
  if not (is_int(v) and (v >= 1 or v == INFINITE_TASKS)):
    return (f'config.{path} must be an integer >= 1, or -1 for a fresh task per episode; '
            f'got {v!r}.')
  if v >= 2**31:
    return f'config.{path}={v} is too large; use < 2**31 or -1 (infinite).'
  return None


def _proj_scale(path: str, v: Any) -> str | None:
  if is_number(v) and 0 < v <= F32_MAX:
    return None
  return (f'config.{path} must be a number in (0, {F32_MAX:.3g}] (finite in float32), got '
          f'{v!r}.')


def _grad_clip(path: str, v: Any) -> str | None:
  if is_number(v) and v >= 0:
    return None
  return f'config.{path} must be >= 0 (0 disables clipping), got {v!r}.'


def _dataset_names(path: str, v: Any) -> str | None:
  if isinstance(v, (tuple, list)) and all(isinstance(d, str) for d in v):
    return None
  return (f'config.{path} must be a tuple of dataset names (TFDS, folder:PATH or npz:PATH), '
          f'got {v!r}.')


def _numbers(path: str, v: Any) -> str | None:
  if isinstance(v, (tuple, list)) and all(is_number(x) and math.isfinite(x) for x in v):
    return None
  return f'config.{path} must be a tuple of finite numbers, got {v!r}.'


def _non_negative(path: str, v: Any) -> str | None:
  if not (is_number(v) and math.isfinite(v)):
    return finite(path, v)
  return None if v >= 0 else f'config.{path} must be >= 0, got {v!r}.'


def _boolean(path: str, v: Any) -> str | None:
  return None if isinstance(v, bool) else f'config.{path} must be True or False, got {v!r}.'


# Registries, read when a value is checked (they import JAX and Flax).
def _families() -> tuple:
  from icl_jax.tasks import families  # pylint: disable=g-import-not-at-top
  return tuple(families.FAMILIES)


def _prompts() -> tuple:
  from icl_jax.tasks import prompts  # pylint: disable=g-import-not-at-top
  return prompts.PROMPTS


def _projections() -> tuple:
  from icl_jax.tasks import projected  # pylint: disable=g-import-not-at-top
  return projected.PROJECTIONS


def _models() -> tuple:
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  return tuple(models.MODELS)


def _dtypes() -> tuple:
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  return tuple(models.DTYPES)


def _attention() -> tuple:
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  return models.ATTENTION


SCHEDULES = ('constant', 'cosine')
POSITIONS = ('learned', 'none')
GROUP_STRATEGIES = ('auto', 'vmap', 'map')
_SYNTH = 'synthetic'

# ---------------------------------------------------------------------------------------
# The fields. Order: the config's, and the config reference's.
# ---------------------------------------------------------------------------------------
F = Field
FIELDS: tuple[Field, ...] = (
    F('seed', 0, 'every random key derives from it by `fold_in` with a named purpose '
      '(init, data, tasks, eval)', _seed, VALUE),
    # --- data ---
    F('data.dataset', 'digits', 'a TFDS name (`digits` embedded; `mnist`, `fashion_mnist`, '
      '...), or a file source: `folder:PATH` (an image folder), `npz:PATH` (an array file) '
      '(see Datasets)', _dataset),
    F('data.image_shape', (8, 8), 'every image dataset is grayscaled and resized to this '
      'shape, flattened, z-normalised', _image_shape),
    F('data.data_dir', None, 'TFDS data dir; default `$TFDS_DATA_DIR`, else '
      '`~/tensorflow_datasets`', policy=RESUMABLE, type=str),
    F('data.train_split', 'train', 'the split of seen-task episodes (training and seen-task '
      'evaluation)'),
    F('data.eval_split', 'test', 'the split of unseen-task episodes: new tasks on held-out '
      'examples'),
    # --- task ---
    F('task.family', 'projected', 'the task family (see Task families; `projected` is '
      'GPICL\'s)', one_of(_families)),
    F('task.num_tasks', 2**16, 'size of the task pool (2^k), or `-1` for a fresh task per '
      'episode', _num_tasks, VALUE, hparam='num_tasks'),
    F('task.seq_len', 50, 'examples per sequence (T)', count()),
    F('task.prompt', 'context_query', 'the prompt format (see Prompt formats): `gpicl` '
      '([x_t, y_{t-1}], T tokens) or `context_query` (2T tokens)', one_of(_prompts)),
    F('task.proj_scale', 1.0, 'projection entries ~ N(0, proj_scale / Nx)', _proj_scale, VALUE,
      hparam='proj_scale'),
    F('task.projection', 'threefry', 'how projections are drawn from each task\'s key: '
      '`threefry` (`jax.random.normal`\'s stream, that of every earlier run, bit for bit, '
      'computed with the hash unrolled: ~3.5x cheaper on a CPU than jax\'s own loop) or '
      '`threefry_fast` (the same Threefry-2x32 hash, both words of a block used: another ~1.5x, '
      'a different stream, so opt in for new runs; see Benchmarks). A run cannot resume with '
      'the other value', one_of(_projections), legacy='threefry'),
    F('task.distinct_examples', True, '`True`: an episode\'s T examples are T different rows '
      'of the split (Floyd\'s algorithm without a loop: a few array operations, O(T log T) per '
      'episode, the same indices as the loop it replaced). `False`: drawn with replacement, as '
      'every run did before this field existed; a stored config without it restores as '
      '`False`, so old runs evaluate as they trained. A run cannot resume with the other value '
      '(the error names the flag that resumes it)', _boolean, legacy=False),
    F('task.bias_fraction', 0.0, 'share of each batch with the identity label permutation '
      '(the paper\'s plateau intervention)', unit_interval(closed=True), VALUE,
      hparam='bias_fraction'),
    F('task.dim', 20, 'synthetic families: input dimension D; bits for parity; keys for '
      'recall', count(), when=_SYNTH),
    F('task.sparsity', 3, 'sparse_linear: non-zero weights; parity: its order k', count(),
      when=_SYNTH),
    F('task.hidden', 100, 'relu2nn: hidden units of its networks', count(), when=_SYNTH),
    F('task.tree_depth', 4, 'tree: depth of its decision trees (at most 16)', count(),
      when=_SYNTH),
    F('task.noise_std', 0.0, 'regression families: Gaussian label noise', _non_negative,
      when=_SYNTH),
    F('task.x_scale', 1.0, 'x = x_scale * z + x_shift, z from the family\'s base '
      'distribution', positive_finite, when=_SYNTH),
    F('task.x_shift', 0.0, 'see x_scale', finite, when=_SYNTH),
    F('task.length_scale', 0.6, 'gp: the RBF kernel\'s length scale', positive_finite,
      when=_SYNTH),
    F('task.x_low', 0.0, 'gp: inputs z ~ U[x_low, x_high]^D', finite, when=_SYNTH),
    F('task.x_high', 1.0, 'gp: see x_low', finite, when=_SYNTH),
    F('task.num_classes', 10, 'recall: value classes', count(), when=_SYNTH),
    F('task.curriculum.enabled', False, 'Garg et al.\'s curriculum (regression families): '
      'the first `dim` coordinates and `points` examples are used, growing by `*_inc` every '
      '`every_steps` up to task.dim and task.seq_len', _boolean),
    F('task.curriculum.dim_start', 5, 'see enabled', count(), when=_SYNTH),
    F('task.curriculum.dim_inc', 1, 'see enabled', count(0), when=_SYNTH),
    F('task.curriculum.points_start', 11, 'see enabled', count(), when=_SYNTH),
    F('task.curriculum.points_inc', 2, 'see enabled', count(0), when=_SYNTH),
    F('task.curriculum.every_steps', 2000, 'see enabled', count(), when=_SYNTH),
    # --- model ---
    F('model.name', 'transformer', 'the model (see Models)', one_of(_models)),
    F('model.width', 256, 'the residual stream width N_M', count()),
    F('model.depth', 4, 'number of blocks', count()),
    F('model.num_heads', 8, 'attention heads', count()),
    F('model.qkv_size', 32, 'key / query / value size per head', count()),
    F('model.mlp_ratio', 4, 'MLP hidden units = mlp_ratio * width', count()),
    F('model.positions', 'learned', '`learned`, or `none`: order comes from the attention '
      'mask alone', one_of(lambda: POSITIONS)),
    F('model.init_scale', 1.0, 'lsa: scale of its initial projections', positive_finite),
    F('model.dtype', 'float32', 'compute dtype, `float32` or `bfloat16` (the transformer\'s); '
      'parameters, gradients, Adam\'s moments, logits and the loss stay float32',
      one_of(_dtypes), legacy='float32'),
    F('model.attention', 'auto', '`auto` (bfloat16 with a causal prompt: cuDNN\'s fused '
      'kernel where the program is lowered for CUDA, XLA\'s for the CPU, TPU and ROCm, chosen '
      'by `lax.platform_dependent`, not by the host; otherwise XLA\'s), `xla` or `cudnn` '
      '(refused at build time for float32 or a non-causal prompt, and while tracing where jax '
      'has no cuDNN)', one_of(_attention), legacy='auto'),
    # --- train ---
    F('train.steps', 1000, 'training steps', count(), RESUMABLE),
    F('train.batch_size', 128, 'episodes per step, global: split over the mesh\'s data axis',
      count()),
    F('train.lr', 1e-3, 'Adam\'s learning rate (after warm-up)', optimizer_rate, VALUE,
      hparam='lr'),
    F('train.b1', 0.9, 'Adam\'s b1', unit_interval(closed=False), VALUE, hparam='b1'),
    F('train.b2', 0.999, 'Adam\'s b2', unit_interval(closed=False), VALUE, hparam='b2'),
    F('train.eps', 1e-8, 'Adam\'s eps', optimizer_rate, VALUE, hparam='eps'),
    F('train.warmup_steps', 0, 'linear warm-up from 0', count(0)),
    F('train.schedule', 'constant', 'after warm-up: `constant`, or `cosine` decay to 0 at '
      'train.steps', one_of(lambda: SCHEDULES)),
    F('train.grad_clip', 1.0, 'global-norm clip; 0 disables it', _grad_clip),
    F('train.log_every_steps', 50, 'each periodic action also happens at the last step',
      count(), RESUMABLE),
    F('train.eval_every_steps', 500, 'in-context accuracy on seen and unseen tasks', count(),
      RESUMABLE),
    F('train.checkpoint_every_steps', 500, 'orbax checkpoints, saved in the background',
      count(), RESUMABLE),
    F('train.keep_checkpoints', 3, 'checkpoints kept', count(), RESUMABLE),
    # --- eval ---
    F('eval.datasets', (), 'other datasets (as data.dataset) to meta-test on during training',
      _dataset_names, RESUMABLE),
    F('eval.num_episodes', 256, 'episodes per evaluation, for each of seen and unseen tasks',
      count(), RESUMABLE),
    # Checked against task.seq_len (config.validate's rules).
    F('eval.first_positions', 5, '"accuracy at the first positions" averages over these '
      '(normalised error for regression)', policy=RESUMABLE),
    F('eval.last_positions', 10, '"... at the last positions" averages over these',
      policy=RESUMABLE),
    F('eval.x_scales', (), 'regression families: extra unseen-task sets with inputs x = '
      'scale * z (Akyurek et al.\'s out-of-distribution checks)', _numbers, RESUMABLE),
    F('eval.x_shifts', (), 'regression families: ... and x = z + shift', _numbers, RESUMABLE),
    # --- mesh ---
    F('mesh.data', -1, 'devices splitting each run\'s batch; -1: all that the run axis '
      'leaves', device_count, RESUMABLE),
    F('mesh.run', -1, 'devices on the run axis of a sweep group, each holding whole runs; -1: '
      'one per run, up to all of them (a larger group is padded to a multiple)', device_count,
      RESUMABLE),
    F('mesh.group_strategy', 'auto', 'how a device steps its runs: `vmap` (one batched '
      'program), `map` (`lax.map`, one run after another in one program), `auto` (`map` on a '
      'CPU, `vmap` on accelerators)', one_of(lambda: GROUP_STRATEGIES), RESUMABLE),
)
del F

BY_PATH: dict[str, Field] = {f.path: f for f in FIELDS}


def policy(path: str) -> str:
  """The policy of a dotted field; one this version does not know takes its section's."""
  if path in BY_PATH:
    return BY_PATH[path].policy
  return SECTION_POLICY.get(path.split('.', 1)[0], STATIC)


def markdown_table() -> str:
  """The config reference's table of fields: path, default, policy, meaning."""
  rows = ['| field | default | on resume / in a group | meaning |', '|---|---|---|---|']
  words = {VALUE: 'fixed / may differ', STATIC: 'fixed / shared',
           RESUMABLE: 'may change / shared'}
  for f in FIELDS:
    default = f'`{f.default!r}`'.replace('|', '\\|')
    rows.append(f'| `{f.path}` | {default} | {words[f.policy]} | {f.doc} |')
  return '\n'.join(rows)


if __name__ == '__main__':
  print(markdown_table())
