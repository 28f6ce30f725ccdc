"""The registries are the single source: the docs' tables list exactly what they register.

A family, model or prompt added to (or removed from) a registry without its row in
docs/experiments.md fails here, and so does a row for something that is not registered.
"""

import functools
import os
import re

import numpy as np
import pytest
from flax import nnx

from icl_jax import config as config_lib
from icl_jax import models
from icl_jax import tasks
from icl_jax.tasks import prompts

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs',
                      'experiments.md')


def section(heading: str) -> list[str]:
  """The lines under the page's heading that contains `heading`, up to the next heading."""
  with open(README) as f:
    lines = f.read().splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith('#') and heading in line]
  assert len(starts) == 1, f'{README} needs exactly one heading with {heading!r}'
  body = []
  for line in lines[starts[0] + 1:]:
    if line.startswith('#'):
      break
    body.append(line)
  return body


def table(heading: str) -> dict[str, list[str]]:
  """{first cell's `name`: the other cells} of the table rows under `heading`."""
  rows = {}
  for line in section(heading):
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    match = re.fullmatch(r'`(\w+)`', cells[0]) if line.startswith('|') else None
    if match:
      assert match.group(1) not in rows, f'{match.group(1)} is listed twice'
      rows[match.group(1)] = cells[1:]
  return rows


def names(cell: str) -> list[str]:
  return re.findall(r'`(\w+)`', cell)


def test_readme_lists_exactly_the_registered_task_families():
  assert list(table('(`config.task.family`)')) == list(tasks.FAMILIES)


def test_readme_lists_exactly_the_registered_models_and_their_prompts():
  rows = table('(`config.model.name`)')
  assert list(rows) == list(models.MODELS)
  for name, entry in models.MODELS.items():
    assert names(rows[name][1]) == list(entry.prompts), name


def test_readme_lists_exactly_the_registered_prompts():
  bullets = [m.group(1) for line in section('(`config.task.prompt`)')
             if (m := re.match(r'- `(\w+)`', line))]
  assert bullets == list(prompts.PROMPTS)


def test_causal_prompts_are_those_with_the_causal_mask():
  for prompt in prompts.PROMPTS:
    mask_SxS = tasks.attention_mask(prompt, 3)
    causal = np.array_equal(mask_SxS, np.tril(np.ones_like(mask_SxS)))
    assert (prompt in prompts.CAUSAL_PROMPTS) == causal, prompt


def test_every_model_serves_known_prompts_and_only_projected_reads_a_dataset():
  for entry in models.MODELS.values():
    assert entry.prompts and set(entry.prompts) <= set(prompts.PROMPTS)
  assert [n for n, f in tasks.FAMILIES.items() if f.reads_dataset] == ['projected']
  assert tasks.FAMILIES['projected'].num_classes is None
  assert all(f.num_classes is not None for f in tasks.SYNTHETIC_FAMILIES.values())


@pytest.mark.parametrize('name', [n for n, e in models.MODELS.items()
                                  if set(e.prompts) != set(prompts.PROMPTS)])
def test_a_model_refuses_at_build_time_the_prompts_it_does_not_serve(name):
  c = config_lib.base_config().model
  c.name = name
  c.width, c.depth, c.num_heads, c.qkv_size = 4, 1, 1, 2
  for prompt in prompts.PROMPTS:
    # Shapes only: building is what refuses, no parameters are needed.
    build = functools.partial(nnx.eval_shape, lambda p=prompt: models.build(
        c, in_features=3, out_features=2, max_len=4, rngs=nnx.Rngs(0), prompt=p))
    if prompt in models.MODELS[name].prompts:
      build()
    else:
      with pytest.raises(ValueError, match=f'cannot serve the {prompt!r} prompt'):
        build()


def test_every_family_has_a_title_for_figures():
  """A synthetic family's figures and tables name its tasks by this title, not its key."""
  for name, family in tasks.FAMILIES.items():
    assert family.reads_dataset or family.title, name
