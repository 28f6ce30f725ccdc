r"""GPICL's loss plateau and its interventions (Kirsch et al. 2022, section 4.4).

Meta-training first sits at the loss of guessing, ln 10, then leaves it. The paper shortens
that plateau three ways: a larger meta-batch (about a power law in the batch size), a
smaller Adam epsilon, and a biased training distribution (here: a fraction of every batch
keeps the identity label permutation, with its random projection; less diverse tasks).
Each `study` sweeps
one of them, with `seeds` seeds per value, on GPICL digits tasks (2^16 tasks, width 64,
depth 2) in either prompt format; the report draws plateau.png (plateau length against the
swept value, the power-law fit for the batch size, censored points marked) and
training_curves.png (every run's loss).

  study=batch   train.batch_size over `batch_sizes` (separate compiled groups).
  study=eps     train.eps over `eps_values` (one vmapped group: a value field).
  study=bias    task.bias_fraction over `bias_fractions` (one vmapped group).

Episodes have the digits default of 50 examples: with 25 (half the cost) no batch size from
16 to 64 left the plateau within 1200 steps on this CPU. The plateau length is the first
logged step whose training loss is 0.1 below ln 10 (icl_jax/diagnose.py). With a biased
fraction that loss mixes the identity-permutation rows with the rest, so it may leave ln 10
whether or not in-context learning starts; the unseen-task accuracy at the 8 evaluations
during training (unbiased tasks, training_curves.png's right panel) says when that does.

  python -m launch.sweep --config experiments/plateau.py:study=batch --root workdirs/plateau_batch
  python -m launch.sweep --config experiments/plateau.py:study=bias,prompt=gpicl --root ...
  python -m icl_jax.report --root workdirs/plateau_batch
"""

from icl_jax import config as config_lib
from icl_jax import presets
from icl_jax.errors import UserError

STUDIES = {'batch': 'train.batch_size', 'eps': 'train.eps', 'bias': 'task.bias_fraction'}
DEFAULT_STEPS = {'context_query': 1500, 'gpicl': 4000}  # The paper's format plateaus longer.


def _arg(arg):
  a = config_lib.parse_arg(arg, study='batch', prompt='context_query', seeds=2, steps=0,
                           num_tasks=2**16, seq_len=50, batch_size=64,
                           batch_sizes='32+64+128', eps_values='1e-16+1e-8+1e-6+1e-4',
                           bias_fractions='0+0.5+0.9', smoke=False)
  if a.study not in STUDIES:
    raise UserError(f'Unknown study {a.study!r}; choose one of {", ".join(STUDIES)}.')
  if a.prompt not in DEFAULT_STEPS:
    raise UserError(f'Unknown prompt {a.prompt!r}; choose one of {", ".join(DEFAULT_STEPS)}.')
  return a


def _values(a) -> list:
  text = {'batch': a.batch_sizes, 'eps': a.eps_values, 'bias': a.bias_fractions}[a.study]
  cast = int if a.study == 'batch' else float
  return [cast(v) for v in str(text).split('+')]


def get_config(arg=None):
  a = _arg(arg)
  steps = a.steps or DEFAULT_STEPS[a.prompt]
  c = presets.gpicl_digits(a.num_tasks, 64, steps, depth=2, prompt=a.prompt,
                           eval_every_steps=max(steps // 8, 1))
  c.task.seq_len = a.seq_len
  c.train.batch_size = a.batch_size
  c.train.log_every_steps = 25  # The plateau's end is read from these logs.
  if a.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
  return c


def sweep(add, arg=None):
  a = _arg(arg)
  values = _values(a)[:2] if a.smoke else _values(a)
  for value in values:
    for seed in range(1 if a.smoke else a.seeds):
      add(**{STUDIES[a.study]: value, 'seed': seed})
