"""What an evaluation writes: learning curves with intervals, CSV, figure, table.

`results` everywhere is {set name: {method: {'mean': [per position], 'ci95': [...]}}}, as
`curves` makes it from the Evaluator's per-episode scores.
"""

from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import numpy as np

from icl_jax import files
from icl_jax import learning_curves
from icl_jax.baselines import registry
from icl_jax.evaluator import RANDOM
from icl_jax.evaluator import SEEN
from icl_jax.evaluator import UNSEEN

Z_95 = 1.96


def method_label(method: str, model_name: str, regression: bool = False) -> str:
  if method == model_name:
    return f'{model_name} (meta-trained)'
  return registry.title(method, regression)


def display_name(set_name: str, train_dataset: str) -> str:
  if set_name == SEEN:
    return f'{train_dataset} (seen tasks)'
  if set_name == UNSEEN:
    return f'{train_dataset} (unseen tasks)'
  if set_name == RANDOM:
    return 'random (Gaussian inputs, random labels)'
  name = set_name.split(':', 1)[-1]
  return f'{train_dataset}, {name}' if name.startswith('x_') else name


def curves(score_MxT: np.ndarray) -> dict[str, list[float]]:
  """Mean score per position and the half-width of its 95% normal interval."""
  m = score_MxT.shape[0]
  mean_T = score_MxT.mean(0)
  if score_MxT.dtype == bool:
    half_T = Z_95 * np.sqrt(mean_T * (1 - mean_T) / max(m - 1, 1))
  else:
    half_T = Z_95 * score_MxT.std(0, ddof=1) / np.sqrt(m) if m > 1 else np.zeros_like(mean_T)
  return {'mean': mean_T.tolist(), 'ci95': half_T.tolist()}


def write_csv(path: str, results: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
              metric: str = 'accuracy') -> None:
  """One row per set, method and position: the curve and its 95% half-width."""
  files.write_csv(path, ['set', 'method', 'examples_in_context', metric, 'ci95'], (
      [set_name, method, t, f'{mean:.6f}', f'{half:.6f}']
      for set_name, methods in results.items() for method, c in methods.items()
      for t, (mean, half) in enumerate(zip(c['mean'], c['ci95']))))


def plot(path: str, results: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
         titles: Mapping[str, str], chance: float | None, regression: bool = False,
         title: str | None = None,
         fits: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> None:
  """One panel per set, one curve per method (the first is the model: drawn on top, its
  95% band the only strong one); `chance` draws a reference line (for regression: 1.0, the
  error of predicting the prior mean). The legend sits below the panels, outside the data.
  With `fits` (learning_curves.fit_all), the model's better-fitting law is drawn dotted
  and its exponent or rate named under the panel's title."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  n = len(results)
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False, sharey=True)
  clipped = False
  for ax, (set_name, methods) in zip(axes[0], results.items()):
    model = next(iter(methods))
    for method, c in methods.items():
      mean, half = np.asarray(c['mean']), np.asarray(c['ci95'])
      t = np.arange(len(mean))
      first = method == model
      line, = ax.plot(t, mean, label=method_label(method, model, regression),
                      lw=2.4 if first else 1.2, zorder=3 if first else 2)
      ax.fill_between(t, mean - half, mean + half, alpha=0.2 if first else 0.06,
                      color=line.get_color(), lw=0)
    if chance is not None:
      ax.axhline(chance, color='gray', ls='--', lw=1,
                 label='predicting 0 (the prior mean)' if regression else 'chance (1 / classes)')
    panel_title = titles[set_name]
    model_fit = (fits or {}).get(set_name, {}).get(model)
    fitted = learning_curves.fitted_curve(model_fit, len(methods[model]['mean'])) \
        if model_fit else None
    if fitted is not None:
      ax.plot(np.arange(1, len(fitted) + 1), fitted if regression else 1.0 - fitted,
              color='black', ls=':', lw=1.2, zorder=4,
              label=f'fitted curve of the {method_label(model, model, regression)} '
                    '(law above each panel)')
      panel_title += (f'\nfit: error ≈ c + a·{learning_curves.describe(model_fit)}'
                      f' ({model_fit["better"]})')
    ax.set_title(panel_title, fontsize=10)
    ax.set_xlabel('examples in context')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if regression:
      top = max(max(c['mean']) for c in methods.values())
      clipped |= top * 1.05 > 2.0
      ax.set_ylim(0, min(max(top, 1.0) * 1.05, 2.0))
    else:
      ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(('normalised squared error' + (' (axis cut at 2)' if clipped else ''))
                        if regression else 'accuracy')
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 4), fontsize=8,
             frameon=False)
  rows = -(-len(labels) // 4)
  top = 1.0
  if title:
    # Wrapped to the figure's width (~0.6 em per character at 9 pt): a workdir path in a
    # one- or two-panel figure would otherwise run off both edges.
    lines = textwrap.wrap(title, width=int(fig.get_figwidth() * 72 / (9 * 0.6)))
    fig.suptitle('\n'.join(lines), fontsize=9)
    top = 0.98 - 0.04 * len(lines)
  fig.tight_layout(rect=(0, 0.02 + 0.045 * rows, 1, top))
  files.save_figure(fig, path)
  plt.close(fig)


def table(results: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
          titles: Mapping[str, str], regression: bool = False,
          positions: Sequence[int] = ()) -> str:
  """Accuracy (%) after T-1 examples: one row per method, one column per set.

  Regression: the normalised squared error after T-1 examples, and first at each of
  `positions` (e.g. D/2 and D examples, where least squares reaches 0) for the first set.
  """
  sets = list(results)
  methods = list(next(iter(results.values())))
  seq_len = len(next(iter(next(iter(results.values())).values()))['mean'])
  if regression:
    ks = [k for k in positions if 0 <= k < seq_len - 1]
    head = (['normalised error'] + [f'{titles[sets[0]]}, k={k}' for k in ks] +
            [f'{titles[s]}, k={seq_len - 1}' for s in sets])
    rows = [[m] + [f'{results[sets[0]][m]["mean"][k]:.3f}' for k in ks] +
            [f'{results[s][m]["mean"][-1]:.3f}' for s in sets] for m in methods]
  else:
    head = [f'after {seq_len - 1} examples'] + [titles[s] for s in sets]
    rows = [[m] + [f'{100 * results[s][m]["mean"][-1]:.2f}' for s in sets] for m in methods]
  widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
  fmt = lambda r: '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths)))
  return '\n'.join([fmt(head), '  '.join('-' * w for w in widths)] + [fmt(r) for r in rows])
