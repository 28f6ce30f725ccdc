"""Which learning algorithm did a run find? Phase labels and loss-plateau length.

GPICL's phase diagram has four regimes, told apart by accuracy at the first and the last
positions of a sequence on seen tasks (ids from the training pool) and unseen tasks:

  general_learning     unseen tasks improve within the sequence: it learns in context.
  task_identification  seen tasks improve within the sequence, unseen do not: the context
                       only tells which memorised task this is.
  memorisation         seen tasks are solved from the first position, with no in-sequence
                       improvement: instances are memorised, the context is not used.
  no_learning          none of the above; typically the loss still sits on its plateau.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

# Accuracy gain from the first to the last positions that counts as learning in context.
# With 256+ episodes the 95% interval of an accuracy is below +-0.06, so 0.1 is a real gain.
IMPROVEMENT = 0.1
# Unseen accuracy at the last positions must also clear chance by this much: a gain from
# below-chance first positions to chance is not learning.
ABOVE_CHANCE = 0.1
# Seen-task accuracy at the first positions (no context yet) that only memorisation
# explains: 0.3 above chance is far beyond what label frequencies give.
MEMORISED = 0.3
# The loss has left its plateau once it is this far below ln(num_classes), the loss of
# a uniform prediction; 0.1 nats is well outside the step-to-step noise of a batch mean.
PLATEAU_MARGIN = 0.1

PHASES = ('general_learning', 'task_identification', 'memorisation', 'no_learning')


def phase(summary: Mapping[str, float], num_classes: int) -> str:
  """Labels a run from its 'seen/acc_first', 'seen/acc_last', 'unseen/...' accuracies."""
  chance = 1.0 / num_classes
  seen_gain = summary['seen/acc_last'] - summary['seen/acc_first']
  unseen_gain = summary['unseen/acc_last'] - summary['unseen/acc_first']
  if unseen_gain >= IMPROVEMENT and summary['unseen/acc_last'] >= chance + ABOVE_CHANCE:
    return 'general_learning'
  if seen_gain >= IMPROVEMENT:
    return 'task_identification'
  if summary['seen/acc_first'] >= chance + MEMORISED:
    return 'memorisation'
  return 'no_learning'


def plateau_length(records: Sequence[Mapping[str, float]], num_classes: int,
                   loss_key: str = 'train/loss') -> int | None:
  """Steps until the training loss first drops PLATEAU_MARGIN below ln(num_classes).

  None if it never did within the records (the run is still on its plateau).
  """
  threshold = math.log(num_classes) - PLATEAU_MARGIN
  numeric = (r for r in records
             if isinstance(r.get(loss_key), (int, float)) and not isinstance(r[loss_key], bool))
  for record in sorted(numeric, key=lambda r: r['step']):
    if record[loss_key] < threshold:
      return int(record['step'])
  return None
