"""The config schema, argument parsing for experiment files, and validation.

Every experiment file starts from `base_config()` so that the names researchers type on
command lines and in sweeps are the same everywhere (see the schema in README.md).
Validation runs before any data is loaded or anything compiles, and raises `UserError`
with the fix in the message.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from icl_jax.errors import UserError
from icl_jax.fields import ADDED_FIELDS
from icl_jax.fields import INFINITE_TASKS
from icl_jax.fields import is_number

# The task families, models and prompts are not listed here: validation reads their
# registries (tasks.FAMILIES, models.MODELS, tasks.prompts.PROMPTS).
SCHEDULES = ('constant', 'cosine')
POSITIONS = ('learned', 'none')
GROUP_STRATEGIES = ('auto', 'vmap', 'map')


def base_config() -> ml_collections.ConfigDict:
  """Defaults for every field; experiment files override what they need."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Every key derives from it by fold_in with a named purpose.

  c.data = ml_collections.ConfigDict()
  # TFDS name ('digits' is embedded and prepared offline), or folder:PATH / npz:PATH for
  # images on disk (icl_jax/data/local.py).
  c.data.dataset = 'digits'
  c.data.image_shape = (8, 8)  # Every dataset is grayscaled and resized to this.
  # None: $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  c.data.train_split = 'train'  # Seen-task episodes (training and seen-task eval).
  c.data.eval_split = 'test'  # Unseen-task episodes: new tasks on held-out examples.

  c.task = ml_collections.ConfigDict()
  c.task.family = 'projected'
  c.task.num_tasks = 2**16  # Size of the task pool; -1: a fresh task per episode.
  c.task.seq_len = 50  # T: examples per episode.
  c.task.prompt = 'context_query'  # 'gpicl' ([x_t, y_{t-1}], T tokens) or 'context_query' (2T tokens).
  c.task.proj_scale = 1.0  # A_ij ~ N(0, proj_scale / Nx).
  # How task projections are drawn: 'threefry' (jax.random.normal, as every run before this
  # option, bit for bit) or 'threefry_fast' (the same hash unrolled, both words used: ~5x
  # cheaper draws on a CPU; another stream, so opt in for new runs). See tasks/projected.py.
  c.task.projection = 'threefry'
  # An episode's examples are distinct rows of the split. False draws them with replacement,
  # as every run before this option did (a stored config without it restores as False).
  c.task.distinct_examples = True
  c.task.bias_fraction = 0.0  # Share of each batch that keeps the identity label permutation.
  # Synthetic families (all but 'projected'); see icl_jax/tasks/families.py.
  c.task.dim = 20  # D: input dimension; bits for parity; number of keys for recall.
  c.task.sparsity = 3  # Non-zero weights (sparse_linear); parity order k.
  c.task.hidden = 100  # Hidden units of relu2nn's networks.
  c.task.tree_depth = 4
  c.task.noise_std = 0.0  # Gaussian label noise (regression families).
  c.task.x_scale = 1.0  # x = x_scale * z + x_shift, z from the family's base distribution.
  c.task.x_shift = 0.0
  c.task.length_scale = 0.6  # gp: RBF length scale; inputs z ~ U[x_low, x_high]^D.
  c.task.x_low = 0.0
  c.task.x_high = 1.0
  c.task.num_classes = 10  # recall: value classes.
  # Garg et al.'s curriculum: the first `dim` coordinates and `points` examples are used,
  # growing by `*_inc` every `every_steps` up to task.dim and task.seq_len. A function of
  # the step, so resume stays exact.
  c.task.curriculum = ml_collections.ConfigDict()
  c.task.curriculum.enabled = False
  c.task.curriculum.dim_start = 5
  c.task.curriculum.dim_inc = 1
  c.task.curriculum.points_start = 11
  c.task.curriculum.points_inc = 2
  c.task.curriculum.every_steps = 2000

  c.model = ml_collections.ConfigDict()
  c.model.name = 'transformer'  # One of models.MODELS (icl_jax/models/__init__.py).
  c.model.width = 256  # N_M, the residual stream width.
  c.model.depth = 4  # Number of blocks.
  c.model.num_heads = 8
  c.model.qkv_size = 32  # Per head.
  c.model.mlp_ratio = 4  # MLP hidden = mlp_ratio * width.
  c.model.positions = 'learned'  # Or 'none': order comes from the attention mask alone.
  c.model.init_scale = 1.0  # lsa: scale of its initial projections (see models/lsa.py).
  # Compute dtype: 'float32' or 'bfloat16' (parameters, optimizer state, logits and loss
  # stay float32). bfloat16 pays on GPUs and TPUs; on a CPU it is slower (README, Benchmarks).
  c.model.dtype = 'float32'
  # Attention kernel: 'auto' (cuDNN on a GPU for bfloat16 and a causal prompt, else XLA),
  # 'xla' or 'cudnn'.
  c.model.attention = 'auto'

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.batch_size = 128  # Global: split over the mesh's data axis.
  c.train.lr = 1e-3
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.eps = 1e-8
  c.train.warmup_steps = 0
  c.train.schedule = 'constant'  # After warm-up; 'cosine' decays to 0 at train.steps.
  c.train.grad_clip = 1.0  # Global-norm clip; 0 disables it.
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 500
  c.train.checkpoint_every_steps = 500
  c.train.keep_checkpoints = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.datasets = ()  # Other datasets (as c.data.dataset) to meta-test on during training.
  c.eval.num_episodes = 256  # Per evaluation, for each of seen and unseen tasks.
  c.eval.first_positions = 5  # "Accuracy at the first positions" averages over these.
  c.eval.last_positions = 10  # "... at the last positions" averages over these.
  # Regression families: extra unseen-task sets with shifted inputs (Akyurek et al.'s
  # out-of-distribution checks), x = scale * z and x = z + shift.
  c.eval.x_scales = ()
  c.eval.x_shifts = ()

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Devices splitting each run's batch; -1: all that the run axis leaves.
  # Devices on the run axis of a sweep group (each holds whole runs); -1: one per run, up to
  # all of them (a larger group is padded to a multiple).
  c.mesh.run = -1
  # How a device steps its runs: 'vmap' (one batched program: pays on accelerators), 'map'
  # (lax.map, one run after another inside one program: plain matmuls, faster on a CPU), or
  # 'auto' ('map' on a CPU when each device holds whole runs, 'vmap' elsewhere).
  c.mesh.group_strategy = 'auto'
  return c


def shrink_for_smoke(c: ml_collections.ConfigDict, steps: int = 30) -> ml_collections.ConfigDict:
  """Shrinks an experiment to seconds on a CPU, to check its pipeline end to end."""
  c.task.seq_len = 20
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 16, 1, 2, 8
  c.train.steps = steps
  c.train.batch_size = 16
  c.train.warmup_steps = 0
  c.train.log_every_steps = 10
  c.train.eval_every_steps = steps
  c.train.checkpoint_every_steps = 10
  c.eval.num_episodes = 32
  return c


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses an experiment file's `:a=1,b` argument into typed options (big_vision style).

  Each option's type is its default's; a bare name sets a boolean option to True.
  """
  # `a.keys` would be ConfigDict's method, not the option: refuse such names up front.
  shadowed = sorted(n for n in defaults if hasattr(ml_collections.ConfigDict, n))
  if shadowed:
    raise ValueError(f'Experiment options {shadowed} are names of ConfigDict methods, which '
                     f'attribute access would return instead; rename them '
                     f'(e.g. num_{shadowed[0]}).')
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    name, has_value, value = item.partition('=')
    name = name.strip()
    if name not in defaults:
      raise UserError(f'Unknown experiment argument {name!r} in {arg!r}. '
                      f'Known arguments: {", ".join(sorted(defaults))}.')
    default = defaults[name]
    if not has_value:
      if not isinstance(default, bool):
        raise UserError(f'Experiment argument {name!r} needs a value, e.g. {name}={default!r}.')
      out[name] = True
      continue
    out[name] = _parse_value(name, value.strip(), default)
  return ml_collections.ConfigDict(out)


def _parse_value(name: str, value: str, default: Any) -> Any:
  try:
    if isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(value)
      return value.lower() in ('true', '1')
    if isinstance(default, int):
      return int(float(value)) if float(value).is_integer() else int(value)
    if isinstance(default, float):
      return float(value)
  except ValueError:
    raise UserError(f'Experiment argument {name}={value!r} is not a valid '
                    f'{type(default).__name__} (default {default!r}).') from None
  return value


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise UserError(message)


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_count(x: Any, minimum: int = 1) -> bool:
  # Sizes and step counts index int32 arrays (XLA dimensions, the step counter, fold_in
  # data), so anything from 2**31 up would fail deep inside XLA instead of here.
  return _is_int(x) and minimum <= x < 2**31


# Training runs in float32: a larger value becomes inf, a positive one below the smallest
# normal float32 may become 0 (accelerators flush subnormals), e.g. Adam's eps.
_F32_MIN, _F32_MAX = 1.1754943508222875e-38, 3.4028234663852886e38


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None,
             num_runs: int = 1) -> None:
  """Checks every field a run depends on; raises UserError naming the field and the fix.

  With `num_devices`, also checks that the mesh fits them for a group of `num_runs` runs.

  Checks that need the dataset (sequence length vs. dataset size) live in the data layer.
  """
  # Imported here, not at the top: they bring in JAX and Flax, and light tools (the
  # report) import this module for its schema alone.
  from icl_jax import models  # pylint: disable=g-import-not-at-top
  from icl_jax.tasks import families  # pylint: disable=g-import-not-at-top
  from icl_jax.tasks import projected  # pylint: disable=g-import-not-at-top
  from icl_jax.tasks import prompts  # pylint: disable=g-import-not-at-top

  t, m, tr, e = config.task, config.model, config.train, config.eval
  # jax.random.key takes a signed 64-bit seed; a larger one fails deep inside JAX.
  _require(_is_int(config.seed) and -2**63 <= config.seed < 2**63,
           f'config.seed must be an integer in [-2**63, 2**63), got {config.seed!r}.')
  _require(isinstance(config.data.dataset, str) and bool(config.data.dataset),
           f'config.data.dataset must be a TFDS dataset name like \'digits\', or '
           f'folder:PATH / npz:PATH; got {config.data.dataset!r}.')
  shape = config.data.image_shape
  _require(isinstance(shape, (tuple, list)) and len(shape) == 2 and
           all(_is_count(s) for s in shape),
           f'config.data.image_shape must be two positive integers like (8, 8), got {shape!r}.')
  _require(t.family in families.FAMILIES,
           f'config.task.family={t.family!r} is unknown; choose one of '
           f'{tuple(families.FAMILIES)}.')
  family = families.FAMILIES[t.family]
  _require(_is_int(t.num_tasks) and (t.num_tasks >= 1 or t.num_tasks == INFINITE_TASKS),
           f'config.task.num_tasks must be an integer >= 1, or -1 for a fresh task per '
           f'episode; got {t.num_tasks!r}.')
  _require(_is_int(t.num_tasks) and t.num_tasks < 2**31,
           f'config.task.num_tasks={t.num_tasks} is too large; use < 2**31 or -1 (infinite).')
  _require(_is_count(t.seq_len),
           f'config.task.seq_len must be an integer in [1, 2**31), got {t.seq_len!r}.')
  _require(t.prompt in prompts.PROMPTS,
           f'config.task.prompt={t.prompt!r} is unknown; choose one of {prompts.PROMPTS}.')
  _require(is_number(t.proj_scale) and 0 < t.proj_scale <= _F32_MAX,
           f'config.task.proj_scale must be a number in (0, {_F32_MAX:.3g}] (finite in '
           f'float32), got {t.proj_scale!r}.')
  _require(t.projection in projected.PROJECTIONS,
           f'config.task.projection={t.projection!r} is unknown; choose one of '
           f'{projected.PROJECTIONS}.')
  _require(is_number(t.bias_fraction) and 0.0 <= t.bias_fraction <= 1.0,
           f'config.task.bias_fraction must be a number in [0, 1], got {t.bias_fraction!r}.')

  _require(not t.curriculum.enabled or family.uses_curriculum,
           f'config.task.curriculum is Garg et al.\'s schedule for the regression families; '
           f'the {t.family!r} family does not use it. Set config.task.curriculum.enabled=False.')
  if not family.reads_dataset:
    _validate_synthetic_task(t, config.eval, family.kind == 'regression')

  _require(m.name in models.MODELS,
           f'config.model.name={m.name!r} is unknown; choose one of {tuple(models.MODELS)}.')
  served = models.MODELS[m.name].prompts
  # Only the recurrent models serve fewer than all prompts: a state cannot hide a token
  # from the tokens after it.
  _require(t.prompt in served,
           f'config.model.name={m.name!r} is recurrent and cannot serve the {t.prompt!r} prompt '
           f'(its query tokens must stay hidden from later tokens); use '
           f'--config.task.prompt={" or ".join(served)}.')
  _require(m.positions in POSITIONS,
           f'config.model.positions={m.positions!r} is unknown; choose one of {POSITIONS}.')
  dtypes = models.MODELS[m.name].dtypes
  _require(m.dtype in models.DTYPES,
           f'config.model.dtype={m.dtype!r} is unknown; choose one of {tuple(models.DTYPES)}.')
  _require(m.dtype in dtypes,
           f'config.model.name={m.name!r} computes in {" or ".join(dtypes)} only; set '
           f'--config.model.dtype={dtypes[0]} (bfloat16 is the transformer\'s).')
  _require(m.attention in models.ATTENTION,
           f'config.model.attention={m.attention!r} is unknown; choose one of '
           f'{models.ATTENTION}.')
  _require(m.attention != 'cudnn' or m.dtype == 'bfloat16',
           'config.model.attention=\'cudnn\' needs --config.model.dtype=bfloat16 (cuDNN\'s '
           'fused attention takes 16-bit inputs); or use \'auto\'.')
  _require(is_number(m.init_scale) and 0 < m.init_scale < _F32_MAX,
           f'config.model.init_scale must be a finite number > 0, got {m.init_scale!r}.')
  for field in ('width', 'depth', 'num_heads', 'qkv_size', 'mlp_ratio'):
    value = m[field]
    _require(_is_count(value),
             f'config.model.{field} must be an integer in [1, 2**31), got {value!r}.')

  for field in ('steps', 'batch_size', 'log_every_steps', 'eval_every_steps',
                'checkpoint_every_steps', 'keep_checkpoints'):
    value = tr[field]
    _require(_is_count(value),
             f'config.train.{field} must be an integer in [1, 2**31), got {value!r}.')
  _require(_is_count(tr.warmup_steps, minimum=0),
           f'config.train.warmup_steps must be an integer in [0, 2**31), got '
           f'{tr.warmup_steps!r}.')
  for field in ('lr', 'eps'):
    value = tr[field]
    _require(is_number(value) and math.isfinite(value) and _F32_MIN <= value <= _F32_MAX,
             f'config.train.{field} must be a finite number > 0 (in float32: between '
             f'{_F32_MIN:.3g} and {_F32_MAX:.3g}), got {value!r}.')
  for field in ('b1', 'b2'):
    value = tr[field]
    _require(is_number(value) and 0.0 <= value < 1.0,
             f'config.train.{field} must be a number in [0, 1), got {value!r}.')
  _require(is_number(tr.grad_clip) and tr.grad_clip >= 0,
           f'config.train.grad_clip must be >= 0 (0 disables clipping), got {tr.grad_clip!r}.')
  _require(tr.schedule in SCHEDULES,
           f'config.train.schedule={tr.schedule!r} is unknown; choose one of {SCHEDULES}.')

  _require(isinstance(e.datasets, (tuple, list)) and all(isinstance(d, str) for d in e.datasets),
           f'config.eval.datasets must be a tuple of dataset names (TFDS, folder:PATH or '
           f'npz:PATH), got {e.datasets!r}.')
  _require(_is_count(e.num_episodes),
           f'config.eval.num_episodes must be an integer in [1, 2**31), got '
           f'{e.num_episodes!r}.')
  for field in ('first_positions', 'last_positions'):
    value = e[field]
    _require(_is_int(value) and 1 <= value <= t.seq_len,
             f'config.eval.{field} must be an integer in [1, config.task.seq_len={t.seq_len}], '
             f'got {value!r}.')

  _require(config.mesh.group_strategy in GROUP_STRATEGIES,
           f'config.mesh.group_strategy={config.mesh.group_strategy!r} is unknown; choose one '
           f'of {GROUP_STRATEGIES}.')
  for axis in ('data', 'run'):
    value = config.mesh.get(axis, -1)
    _require(_is_int(value) and (value >= 1 or value == -1),
             f'config.mesh.{axis} must be a device count >= 1, or -1 to fill it; got {value!r}.')
  if num_devices is not None:
    for axis in ('data', 'run'):
      value = config.mesh.get(axis, -1)
      _require(value <= num_devices,
               f'config.mesh.{axis}={value} asks for more devices than the {num_devices} '
               f'available; use -1 for all of them.')
    run, data = mesh_shape(config.mesh, num_devices, num_runs)
    _require(run * data <= num_devices,
             f'config.mesh asks for run={run} x data={data} devices but {num_devices} are '
             f'available; use -1 to fill an axis with what is left.')
    _require(tr.batch_size % data == 0,
             f'config.train.batch_size={tr.batch_size} is not divisible by the {data} '
             f'devices of the data axis; use a multiple of {data}.')


def _validate_synthetic_task(t: ml_collections.ConfigDict, e: ml_collections.ConfigDict,
                             regression: bool) -> None:
  """The fields of the synthetic task families (all that do not read a dataset)."""
  for field in ('dim', 'sparsity', 'hidden', 'tree_depth', 'num_classes'):
    _require(_is_count(t[field]),
             f'config.task.{field} must be an integer in [1, 2**31), got {t[field]!r}.')
  if t.family in ('sparse_linear', 'parity'):
    _require(t.sparsity <= t.dim,
             f'config.task.sparsity={t.sparsity} exceeds config.task.dim={t.dim}: a '
             f'{t.family} task picks that many of the dim coordinates; lower it.')
  _require(t.tree_depth <= 16,
           f'config.task.tree_depth={t.tree_depth} would give 2**{t.tree_depth} leaves per '
           f'task; use at most 16 (Garg et al. use 4).')
  _require(t.family != 'recall' or t.num_classes >= 2,
           f'config.task.num_classes must be >= 2 for recall, got {t.num_classes!r}.')
  for field in ('noise_std', 'x_shift', 'x_low', 'x_high'):
    _require(is_number(t[field]) and math.isfinite(t[field]),
             f'config.task.{field} must be a finite number, got {t[field]!r}.')
  _require(t.noise_std >= 0, f'config.task.noise_std must be >= 0, got {t.noise_std!r}.')
  for field in ('x_scale', 'length_scale'):
    _require(is_number(t[field]) and 0 < t[field] < _F32_MAX,
             f'config.task.{field} must be a finite number > 0, got {t[field]!r}.')
  _require(t.x_low < t.x_high,
           f'config.task.x_low={t.x_low} must be below config.task.x_high={t.x_high}.')
  cur = t.curriculum
  for field in ('dim_start', 'points_start', 'every_steps'):
    _require(_is_count(cur[field]),
             f'config.task.curriculum.{field} must be an integer in [1, 2**31), got '
             f'{cur[field]!r}.')
  for field in ('dim_inc', 'points_inc'):
    _require(_is_count(cur[field], minimum=0),
             f'config.task.curriculum.{field} must be an integer >= 0, got {cur[field]!r}.')
  if cur.enabled:
    _require(cur.dim_start <= t.dim and cur.points_start <= t.seq_len,
             f'config.task.curriculum starts at dim {cur.dim_start} and {cur.points_start} '
             f'points, beyond config.task.dim={t.dim} / seq_len={t.seq_len} where it ends; '
             f'lower the start values.')
  shifts = tuple(e.x_scales) + tuple(e.x_shifts)
  _require(regression or not shifts,
           f'config.eval.x_scales / x_shifts shift the inputs of regression families; the '
           f'{t.family!r} family has none. Leave them empty.')
  _require(all(is_number(v) and math.isfinite(v) for v in shifts) and
           all(v > 0 for v in e.x_scales),
           f'config.eval.x_scales must be numbers > 0 and x_shifts finite numbers, got '
           f'{tuple(e.x_scales)} and {tuple(e.x_shifts)}.')


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int,
               num_runs: int = 1) -> tuple[int, int]:
  """(run, data) device counts for a group of `num_runs` runs; -1 fills an axis.

  Devices hold whole runs: a free run axis takes one device per run, up to every device,
  and a group larger than the run axis is padded to a multiple of it (`padded_runs`), so
  no device repeats another's Adam update or all-reduces a run's gradients needlessly
  (a gcd would leave a 39-run group on 8 devices with run = 1, data = 8). A free data axis
  splits each run's batch over all the devices the run axis leaves.
  """
  data = mesh_config.data
  run = mesh_config.get('run', -1)
  if run == -1:
    room = num_devices // data if data != -1 else num_devices
    run = max(min(num_runs, room), 1)
  if data == -1:
    data = max(num_devices // run, 1)
  return run, data


def padded_runs(num_runs: int, run_axis: int) -> int:
  """The group's size on the mesh: `num_runs` rounded up to a multiple of the run axis. The
  padding slots train copies of the first run and are never saved or reported."""
  return -(-num_runs // run_axis) * run_axis


def from_dict(d: dict[str, Any]) -> ml_collections.ConfigDict:
  """Rebuilds a stored config on top of the current defaults.

  Fields this version does not know are kept; fields added since get the value that
  reproduces what ran before them (fields.ADDED_FIELDS), else their defaults; JSON lists
  come back as tuples where the default is a tuple.
  """
  config = base_config()
  for field, value in ADDED_FIELDS.items():
    section, name = field.split('.')
    config[section][name] = value
  _merge(config, d)
  return config


def _merge(target: ml_collections.ConfigDict, d: dict[str, Any]) -> None:
  for key, value in d.items():
    if isinstance(value, dict):
      if key not in target:
        target[key] = ml_collections.ConfigDict()
      _merge(target[key], value)
      continue
    if isinstance(value, list) and isinstance(target.get(key), tuple):
      value = tuple(value)
    with target.ignore_type():
      target[key] = value
