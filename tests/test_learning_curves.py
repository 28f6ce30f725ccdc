"""Paired comparisons and learning-curve fits (icl_jax/learning_curves.py) on curves whose
answer is known, and their place in icl_jax.evaluate's results."""

import numpy as np
import pytest

from icl_jax import learning_curves


def test_paired_difference_is_exact_when_one_learner_is_shifted():
  r = np.random.default_rng(0)
  other_MxT = r.random((200, 20))
  p = learning_curves.paired(other_MxT + 0.1, other_MxT, positions=10)
  assert p['diff'] == pytest.approx(0.1) and p['ci95'] == pytest.approx(0.0, abs=1e-12)
  assert p['positions'] == 10 and p['episodes'] == 200


def test_pairing_narrows_the_interval_of_a_shared_episode_difficulty():
  r = np.random.default_rng(1)
  difficulty_M = r.random((400, 1))  # Shared by both learners on each episode.
  model = (r.random((400, 10)) < 0.2 + 0.6 * difficulty_M).astype(float)
  other = (r.random((400, 10)) < 0.15 + 0.6 * difficulty_M).astype(float)
  p = learning_curves.paired(model, other, positions=10)
  unpaired = 1.96 * np.sqrt(model.mean(1).var(ddof=1) / 400 + other.mean(1).var(ddof=1) / 400)
  assert p['ci95'] < 0.8 * unpaired
  assert p['diff'] - p['ci95'] > 0  # The 5-point gap is found.


@pytest.mark.parametrize('law,true_b', [('power', 0.7), ('exponential', 0.3)])
def test_fit_recovers_the_law_and_its_exponent(law, true_b):
  k = np.arange(50, dtype=float)
  clean = {'power': 0.05 + 0.6 * np.maximum(k, 1) ** -true_b,
           'exponential': 0.1 + 0.5 * np.exp(-true_b * k)}[law]
  noisy = clean + np.random.default_rng(2).normal(0, 0.002, k.shape)
  result = learning_curves.fit(noisy, np.full(k.shape, 0.004))
  assert result['better'] == law
  assert result[law]['b'] == pytest.approx(true_b, rel=0.1)
  other = 'exponential' if law == 'power' else 'power'
  assert result[law]['rmse'] < result[other]['rmse']
  np.testing.assert_allclose(learning_curves.fitted_curve(result, 50), clean[1:], atol=0.01)


def test_fit_of_a_short_or_broken_curve_is_none():
  assert learning_curves.fit(np.array([0.9, 0.5, 0.4]))['better'] is None
  assert learning_curves.fit(np.array([0.9, np.nan, 0.4, 0.3, 0.2]))['better'] is None


def test_accuracy_curves_are_fitted_as_error():
  k = np.arange(30, dtype=float)
  accuracy = 1.0 - (0.1 + 0.8 * np.exp(-0.2 * k))
  fits = learning_curves.fit_all({'unseen': {'m': {'mean': accuracy.tolist(),
                                                     'ci95': [0.01] * 30}}}, regression=False)
  f = fits['unseen']['m']
  assert f['better'] == 'exponential' and f['exponential']['c'] == pytest.approx(0.1, abs=0.01)
  assert learning_curves.describe(f) == 'exp(-0.20 k)'
