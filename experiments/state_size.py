r"""GPICL's state-size study: in-context learning follows the state a model can draw on, not
its parameter count.

Model family x size on the same tasks: LSTMs (state 2 x width x depth), outer-product LSTMs
(a qkv_size^2 matrix memory per head and layer) and Transformers (a key and a value per head,
layer and token). Every point's status.json records `num_params` and `state_size`, and the
report's summary.csv lists both beside the seen/unseen accuracies, so meta-test accuracy can
be plotted against either.

Default: GPICL tasks on the embedded digits with the `interleaved` prompt (x_1, y_1, x_2, ...:
causal, so the recurrent models serve it, and every model must carry x_t until its label
arrives). `family=recall` swaps in associative recall (keys to values, the induction task),
where the state needed grows with the number of keys. The paper's setting is
`dataset=mnist,prompt=gpicl,steps=50000`.

  python -m launch.sweep --config experiments/state_size.py --root sweeps/state_size
  python -m icl_jax.report --root sweeps/state_size         # summary.csv: state_size column
  python -m launch.sweep --config experiments/state_size.py:family=recall --root sweeps/recall
  # Without the widest LSTM (width 512 costs as much as the other points together on a CPU):
  python -m launch.sweep --config experiments/state_size.py:family=recall,max_width=256 ...
  python -m launch.sweep --config experiments/state_size.py:smoke --root /tmp/ss
"""

from icl_jax import config as config_lib
from icl_jax.errors import UserError

# (model, width, num_heads, qkv_size) per point: states from ~10^2 to ~10^5 floats.
GRID = {
    'lstm': [(32, 1, 8), (128, 1, 8), (512, 1, 8)],
    'outer_lstm': [(32, 4, 8), (64, 4, 16), (128, 4, 32)],
    'transformer': [(32, 4, 8), (64, 4, 16), (128, 4, 32)],
}


def _arg(arg):
  return config_lib.parse_arg(arg, family='projected', dataset='digits', prompt='interleaved',
                              models='lstm+outer_lstm+transformer', steps=2000, num_tasks=-1,
                              seeds=1, max_width=0, smoke=False)


def get_config(arg=None):
  a = _arg(arg)
  c = config_lib.base_config()
  c.data.dataset = a.dataset
  c.data.image_shape = (8, 8) if a.dataset == 'digits' else (28, 28)
  c.task.family = a.family
  c.task.num_tasks = a.num_tasks
  c.task.prompt = a.prompt
  c.task.seq_len = 50 if a.family == 'projected' else 40
  c.task.dim, c.task.num_classes = 16, 10  # recall: 16 keys, 10 values.

  model = a.models.split('+')[0]
  width, heads, qkv = GRID[model][0]
  c.model.name = model
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = width, 2, heads, qkv

  c.train.steps = a.steps
  c.train.batch_size = 64
  c.train.lr = 1e-3
  c.train.warmup_steps = 100
  c.train.grad_clip = 1.0
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 500
  c.train.checkpoint_every_steps = 500
  c.eval.num_episodes = 256
  if a.smoke:
    config_lib.shrink_for_smoke(c, steps=20)
    c.model.depth = 1
  return c


def sweep(add, arg=None):
  a = _arg(arg)
  for model in a.models.split('+'):
    if model not in GRID:
      raise UserError(f'Unknown model {model!r} in models={a.models!r}; choose '
                      f'from {"+".join(GRID)}.')
    sizes = GRID[model][:1] if a.smoke else [
        size for size in GRID[model] if not a.max_width or size[0] <= a.max_width]
    for width, heads, qkv in sizes:
      for seed in range(a.seeds):
        add(**{'model.name': model, 'model.width': width, 'model.num_heads': heads,
               'model.qkv_size': qkv, 'seed': seed})
