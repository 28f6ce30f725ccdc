"""What an evaluation's per-position scores say beyond their means: paired comparisons of the
model with each classical learner, and power-law and exponential fits of every learning curve.

Pure numpy/scipy on the host, no JAX: `icl_jax.evaluate` calls these on the scores the
Evaluator measured (every method on the very same episodes), and they go into results.json,
the printed tables and the figure.

Paired comparison: per episode, the model's mean score over the last `positions` positions
minus a learner's on the same episode; its mean over episodes, with a 95% normal interval
(1.96 standard errors). Pairing removes the between-episode variance both share, so the
interval is much narrower than that of either mean.

Fits: a curve's error against the number of examples in context k (1 - accuracy, or the
normalised squared error), for k >= 1 (at k = 0 every learner guesses):
  power law     e(k) = c + a * k**(-b)
  exponential   e(k) = c + a * exp(-b * k)
each by least squares with a, b, c >= 0, weighted by the curve's 95% half-widths. The one
with the smaller residual is reported as the better fit; `b` is the exponent (power law) or
the rate per example (exponential).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np

Z_95 = 1.959963984540054
LAWS = ('power', 'exponential')


def paired(score_MxT: np.ndarray, other_MxT: np.ndarray, positions: int) -> dict[str, float]:
  """The model's score minus another learner's, paired by episode, over the last positions:
  {'diff', 'ci95', 'positions', 'episodes'}; for accuracy > 0 means the model is ahead."""
  m, t = score_MxT.shape
  k = max(1, min(positions, t))
  d_M = (np.asarray(score_MxT[:, -k:], np.float64).mean(1) -
         np.asarray(other_MxT[:, -k:], np.float64).mean(1))
  half = Z_95 * d_M.std(ddof=1) / math.sqrt(m) if m > 1 else float('nan')
  return {'diff': float(d_M.mean()), 'ci95': float(half), 'positions': k, 'episodes': m}


def paired_all(scores: Mapping[str, Mapping[str, np.ndarray]], model: str,
               positions: int) -> dict[str, dict[str, dict[str, float]]]:
  """{set: {learner: paired(model, learner)}} for every other method of every set."""
  return {s: {name: paired(methods[model], other, positions)
              for name, other in methods.items() if name != model}
          for s, methods in scores.items() if model in methods}


def _power(k, a, b, c):
  return c + a * np.power(k, -b)


def _exponential(k, a, b, c):
  return c + a * np.exp(-b * k)


_FUNCTIONS = {'power': _power, 'exponential': _exponential}


def fit(error_T: np.ndarray, ci95_T: np.ndarray | None = None) -> dict[str, Any]:
  """Both laws fitted to an error curve (index = examples in context): {'power': {'a', 'b',
  'c', 'rmse'} or None, 'exponential': ..., 'better': 'power' | 'exponential' | None}."""
  from scipy import optimize  # pylint: disable=g-import-not-at-top  (only evaluation needs it)
  error_T = np.asarray(error_T, np.float64)
  k = np.arange(len(error_T), dtype=np.float64)[1:]
  e = error_T[1:]
  out: dict[str, Any] = {'power': None, 'exponential': None, 'better': None}
  if len(e) < 4 or not np.all(np.isfinite(e)):
    return out  # Three parameters need more points than that.
  sigma = None
  if ci95_T is not None:
    half = np.asarray(ci95_T, np.float64)[1:]
    if np.all(np.isfinite(half)) and np.all(half > 0):
      sigma = half
  top = max(float(e.max()), 1e-6)
  starts = {'power': (max(e[0] - e.min(), 1e-3), 0.5, max(e.min(), 0.0)),
            'exponential': (max(e[0] - e.min(), 1e-3), 2.0 / len(e), max(e.min(), 0.0))}
  for law, f in _FUNCTIONS.items():
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # OptimizeWarning: covariance not estimable.
        params, _ = optimize.curve_fit(
            f, k, e, p0=starts[law], sigma=sigma, absolute_sigma=False,
            bounds=([0.0, 0.0, 0.0], [10.0 * top, 10.0, 2.0 * top]), maxfev=20000)
    except (RuntimeError, ValueError):
      continue  # Did not converge: reported as None.
    rmse = float(np.sqrt(np.mean((f(k, *params) - e) ** 2)))
    out[law] = {'a': float(params[0]), 'b': float(params[1]), 'c': float(params[2]),
                'rmse': rmse}
  fitted = [law for law in LAWS if out[law] is not None]
  if fitted:
    out['better'] = min(fitted, key=lambda law: out[law]['rmse'])
  return out


def fitted_curve(fit_result: Mapping[str, Any], length: int) -> np.ndarray | None:
  """The better law's error at k = 1 .. length-1 (None if neither fitted)."""
  law = fit_result.get('better')
  if law is None:
    return None
  p = fit_result[law]
  return _FUNCTIONS[law](np.arange(1, length, dtype=np.float64), p['a'], p['b'], p['c'])


def fit_all(results: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
            regression: bool) -> dict[str, dict[str, dict[str, Any]]]:
  """{set: {method: fit(...)}} of the curves in results.json (accuracy is fitted as error)."""
  out = {}
  for set_name, methods in results.items():
    out[set_name] = {}
    for method, curve in methods.items():
      mean = np.asarray(curve['mean'], np.float64)
      out[set_name][method] = fit(mean if regression else 1.0 - mean, curve.get('ci95'))
  return out


def describe(fit_result: Mapping[str, Any]) -> str:
  """'k^-0.42 (power)' or 'exp(-0.13 k) (exponential)' for the better law; '' if none."""
  law = fit_result.get('better')
  if law is None:
    return ''
  b = fit_result[law]['b']
  return f'k^-{b:.2f}' if law == 'power' else f'exp(-{b:.2f} k)'


def tables(paired_results: Mapping[str, Mapping[str, Mapping[str, float]]],
           fits: Mapping[str, Mapping[str, Mapping[str, Any]]], titles: Mapping[str, str],
           model: str, regression: bool) -> str:
  """Two text tables: the model against each learner (paired, per set), and the fits."""
  unit, scale = ('error', 1.0) if regression else ('accuracy points', 100.0)
  lines = []
  for set_name, learners in paired_results.items():
    if not learners:
      continue
    first = next(iter(learners.values()))
    lines.append(f'{model} minus each learner on the same episodes, {titles[set_name]}: mean '
                 f'{unit} over the last {first["positions"]} positions, 95% interval '
                 f'({first["episodes"]} episodes)')
    for name, p in learners.items():
      lo, hi = (p['diff'] - p['ci95']) * scale, (p['diff'] + p['ci95']) * scale
      better = (hi < 0) if regression else (lo > 0)
      worse = (lo > 0) if regression else (hi < 0)
      verdict = 'model ahead' if better else 'model behind' if worse else 'no clear difference'
      lines.append(f'  vs {name:<12} {p["diff"] * scale:+8.2f}  [{lo:+.2f}, {hi:+.2f}]  '
                   f'{verdict}')
  lines.append('error vs examples in context k, fitted for k >= 1 (better law: exponent or '
               'rate b, floor c, rmse; the other law\'s rmse):')
  for set_name, methods in fits.items():
    lines.append(f'  {titles[set_name]}')
    for method, f in methods.items():
      law = f.get('better')
      if law is None:
        lines.append(f'    {method:<14} no fit')
        continue
      other = next(x for x in LAWS if x != law)
      other_rmse = f'{f[other]["rmse"]:.4f}' if f[other] else 'no fit'
      p = f[law]
      lines.append(f'    {method:<14} {law:<11} b={p["b"]:.3f} c={p["c"]:.3f} '
                   f'rmse={p["rmse"]:.4f}  ({other} rmse={other_rmse})')
  return '\n'.join(lines)
