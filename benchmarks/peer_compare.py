r"""Training speed side by side with the peer, Garg et al.'s own PyTorch code, in one run.

  python benchmarks/peer_compare.py --peer_python $PEERS/venv/bin/python \
      --peer_src $PEERS/dtsip/src [--models tiny,small] [--rounds 2] [--steps N] [--warmup N]

The peer is github.com/dtsip/in-context-learning, built outside this repository as
../shared/peers/README.md says (PEER_PYTHON and DTSIP_SRC may stand for the two flags). Its
side runs that folder's timing driver (`--peer_driver`), which replays the body of their
train() loop; our side runs the step of `train_throughput.py` for garg_tiny / garg_small
(`garg_config`, `framework_step`). Both are Garg et al.'s linear regression at its final
sizes: d = 20, 41 points, batch 64, Adam lr 1e-4.

Machines differ by more than 2x in matmul peak, and a shared machine's load drifts within
minutes, so a figure from elsewhere or from earlier says little: each round runs the peer
and then icl_jax (A B A B ...), each in a fresh process, pinned to the same 2 CPUs with 2
threads, with the same number of timed steps after the same number of untimed ones (ours
also compile in the first). Prints one JSON line per (model, round, side), then one per
model with the median steps/s of each side and the ratio icl_jax / peer, which
`benchmarks/table.py` renders. Load still favours our side: torch's OpenMP threads spin
while they wait for each other, so a third process on the two cores slows the peer's many
small ops most (docs/benchmarks.md); compare rounds taken on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = 2  # The peer driver's default, and a core count that every machine here has.
# Timed steps per run: a few seconds of the peer's steps (6/s tiny, 0.55/s small on 2 cores).
STEPS = {'tiny': 60, 'small': 12}
WARMUP = {'tiny': 10, 'small': 3}


def peer_problem(args) -> str | None:
  """Why the peer cannot run (None if it can): checked before anything slow starts."""
  if not args.peer_python or not args.peer_src:
    return 'pass --peer_python and --peer_src (or set PEER_PYTHON and DTSIP_SRC)'
  if not (os.path.isfile(args.peer_python) and os.access(args.peer_python, os.X_OK)):
    return f'no executable Python at {args.peer_python}'
  if not os.path.isfile(os.path.join(args.peer_src, 'models.py')):
    return f'{args.peer_src} is not the peer\'s src/ folder (no models.py)'
  if not os.path.isfile(args.peer_driver):
    return f'no peer driver at {args.peer_driver}'
  return None


def pinned_cpus() -> list[int] | None:
  """The first THREADS CPUs this process may use: both sides get the same ones, so XLA's
  thread pool (sized from the affinity mask) and torch's 2 threads see the same cores."""
  if not hasattr(os, 'sched_getaffinity'):
    return None
  return sorted(os.sched_getaffinity(0))[:THREADS]


def run_child(cmd: list[str], env: dict[str, str], cpus: list[int] | None) -> tuple[dict, float]:
  """(the child's last JSON line, wall seconds); raises RuntimeError with its stderr tail."""
  pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
  start = time.perf_counter()
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=pin,
                        check=False)
  wall = time.perf_counter() - start
  lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
  if done.returncode != 0 or not lines:
    tail = (done.stderr.strip().splitlines() or ['(no output)'])[-1]
    raise RuntimeError(f'exit {done.returncode}: {tail}')
  return json.loads(lines[-1]), wall


def peer_side(args, model: str, steps: int, warmup: int, cpus) -> dict:
  env = dict(os.environ, DTSIP_SRC=args.peer_src, WANDB_MODE='disabled')
  out, wall = run_child([args.peer_python, args.peer_driver, '--model', model, '--steps',
                         str(steps), '--warmup', str(warmup), '--threads', str(THREADS)],
                        env, cpus)
  return {'steps_per_sec': out['steps_per_s'], 'threads': out['threads'],
          'torch': out.get('torch'), 'transformers': out.get('transformers'),
          'attn_impl': out.get('attn_impl'), 'final_loss': out.get('final_loss'),
          'wall_s': wall}


def icl_jax_side(model: str, steps: int, warmup: int, cpus) -> dict:
  out, wall = run_child([sys.executable, os.path.abspath(__file__), '--one', model, '--steps',
                         str(steps), '--warmup', str(warmup)], dict(os.environ), cpus)
  out['wall_s'] = wall
  return out


def one_icl_jax_run(model: str, steps: int, warmup: int) -> None:
  """Our side, in its own process: `train_throughput`'s step, timed as one window."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import bench_common as common  # pylint: disable=g-import-not-at-top  (before jax)
  import train_throughput  # pylint: disable=g-import-not-at-top
  name = f'garg_{model}'
  run, _, _ = train_throughput.framework_step(train_throughput.garg_config(name))
  for i in range(max(warmup - 2, 0)):  # `windows` runs two more untimed (compile, one).
    common.jax.block_until_ready(run(i))
  rate = common.windows(run, 1, steps, 1)
  record = common.header('peer_compare_one')
  cpus = os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else range(os.cpu_count())
  record.update({'config': name, 'steps_per_sec': rate['median'],
                 'cpu_s_per_step': rate['cpu_s_per_item'], 'threads': len(cpus)})
  common.emit(record)


def rounded(x, digits: int = 4):
  if isinstance(x, dict):
    return {k: rounded(v, digits) for k, v in x.items()}
  if isinstance(x, list):
    return [rounded(v, digits) for v in x]
  return float(f'{x:.{digits}g}') if isinstance(x, float) else x


def emit(record: dict) -> None:
  print(json.dumps(rounded(record)), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--peer_python', default=os.environ.get('PEER_PYTHON'),
                      help='The peer venv\'s Python (default: $PEER_PYTHON).')
  parser.add_argument('--peer_src', default=os.environ.get('DTSIP_SRC'),
                      help='The peer\'s src/ folder (default: $DTSIP_SRC).')
  parser.add_argument('--peer_driver',
                      default=os.path.join(REPO, '..', 'shared', 'peers', 'bench_train.py'))
  parser.add_argument('--models', default='tiny,small')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--steps', type=int, default=None,
                      help=f'Timed steps per run, both sides (default {STEPS}).')
  parser.add_argument('--warmup', type=int, default=None,
                      help=f'Untimed steps before them (default {WARMUP}).')
  parser.add_argument('--one', choices=STEPS, help=argparse.SUPPRESS)  # Our side's process.
  args = parser.parse_args()
  if args.one:
    one_icl_jax_run(args.one, args.steps, args.warmup)
    return
  models = args.models.split(',')
  unknown = [m for m in models if m not in STEPS]
  if unknown:
    parser.error(f'unknown models {unknown}; choose from {list(STEPS)}')
  args.peer_driver = os.path.normpath(args.peer_driver)
  problem = peer_problem(args)
  if problem:
    print(f'error: no peer to compare against: {problem}. Build it outside the repository as '
          f'../shared/peers/README.md says.', file=sys.stderr)
    sys.exit(2)

  cpus = pinned_cpus()
  for model in models:
    steps = args.steps or STEPS[model]
    warmup = WARMUP[model] if args.warmup is None else args.warmup
    rates = {'peer': [], 'icl_jax': []}
    last = {}
    for r in range(1, args.rounds + 1):
      for side in ('peer', 'icl_jax'):  # A B: both sides see the load of the same minutes.
        try:
          out = (peer_side(args, model, steps, warmup, cpus) if side == 'peer' else
                 icl_jax_side(model, steps, warmup, cpus))
        except RuntimeError as e:
          print(f'error: {side} run of {model}, round {r}: {e}', file=sys.stderr)
          sys.exit(1)
        rates[side].append(out['steps_per_sec'])
        last[side] = out
        emit({'benchmark': 'peer_compare_round', 'host': platform.node(),
              'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'model': model, 'round': r,
              'side': side, 'steps': steps, 'warmup': warmup, 'cpus': cpus, **{
                  k: v for k, v in out.items() if k not in ('benchmark', 'time', 'host')}})
    ours, peer = statistics.median(rates['icl_jax']), statistics.median(rates['peer'])
    summary = {'benchmark': 'peer_compare', 'config': f'garg_{model}', 'model': model}
    summary.update({k: last['icl_jax'].get(k) for k in (
        'host', 'platform', 'device_kind', 'cpu_count', 'jax', 'runtime_malloc')})
    summary.update({
        'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'rounds': args.rounds, 'steps': steps,
        'warmup': warmup, 'threads': THREADS, 'torch': last['peer'].get('torch'),
        'peer_steps_per_sec': peer, 'icl_jax_steps_per_sec': ours, 'ratio': ours / peer,
        'peer_rounds': rates['peer'], 'icl_jax_rounds': rates['icl_jax'],
    })
    emit(summary)


if __name__ == '__main__':
  main()
