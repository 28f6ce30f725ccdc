r"""One prepared command for a machine with one NVIDIA GPU and no internet: issue 13's check.

  bash benchmarks/device_wheels.sh                  # here, with PyPI: .device_wheels/ (~13 MB)
  python3 benchmarks/device_check.py --out $OUT     # there: device tool, carry=[".device_wheels"]
  python3 benchmarks/device_check.py --cpu          # the same parts on a CPU, tiny: ~1 min

`--cpu` took 58 s and 79 s on this 2-core machine with other jobs running (load 6 to 13);
its budgets cap it at 270 s, and a machine loaded far beyond its cores (load 15 here) can
push parts past them (it then reports those parts failed). On the GPU the budgets add up
to 340 s.

The GPU machine has Python 3.12, jax with its CUDA plugin, flax, optax, orbax-checkpoint,
chex, scikit-learn and pytest, but none of the project's other dependencies. This script
itself (the orchestrator) uses the standard library only, so it starts there whatever is
missing; everything that needs jax or the project runs in child processes, with the
installed wheels and the repo on their PYTHONPATH. Five parts run one after another, each
with its own time budget, 5 min 40 s in all on the GPU (so the check fits twice, with the
machine's start, in a 15-minute rental). A part that fails or runs out of time is reported,
with the error and the tail of its log, and the others still run:

  setup       installs the wheels of .device_wheels that the image lacks into a --target
              folder put on PYTHONPATH (the image's jax, jaxlib and CUDA plugin are never
              touched; the repo itself goes on PYTHONPATH, uninstalled, so its jax pin does
              not matter), then imports everything and reports versions and devices.
  tests       test files that exercise the model (cuDNN's attention against XLA's), the
              step, exact resume, divergence and a checkpoint's restore, on the GPU
              (ICL_JAX_TEST_PLATFORM=gpu opts out of tests/conftest.py's CPU setup).
  throughput  rows, each held to its own deadline (a row past it is stopped and reported,
              and the next row starts in a fresh process): the measured bf16 and fp32
              matmul peaks, then steps/s, examples/s and MFU against the bf16 peak for the
              GPICL paper's model at MNIST's 784 inputs (digits resized to 28x28; width
              256, 4 layers, 8 heads of 32, T = 100, batch 128) in bf16 and fp32, and
              Garg et al.'s small and tiny (benchmarks/train_throughput.py's configs and
              step); beside each, benchmarks/roofline.py's band of steps/s for this GPU
              from the GPU-compiled step's FLOPs, bytes and kernels, and where the
              measurement falls in it.
  sweep       a vmapped group of 16 width-64 digits runs vs. one run alone
              (benchmarks/sweep_scaling.py).
  train       the paper's model, prompt and optimizer (experiments/gpicl_mnist.py) on the
              embedded digits for about 35 s of steps (a step count from the measured
              steps/s), through `python -m icl_jax.main`: seen/unseen accuracy at each
              evaluation, the loss curve, the plateau length and the phase label.

Everything printed on stdout is one JSON object a line: rows as they are measured
({"part", "row", ...}), one result per part ({"part", "status": ok|failed|skipped,
"seconds", ...}) and a final {"part": "summary", ...}. With --out (default: $OUT) the
lines also go to OUT/device_check.jsonl and each part's log to OUT/<part>.log.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PARTS = ('setup', 'tests', 'throughput', 'sweep', 'train')
# Never installed from the wheels folder, whatever it holds: the image's jax, jaxlib and
# CUDA plugin are what the check is about (device_wheels.sh downloads none of them).
NEVER_INSTALL = ('jax', 'jaxlib', 'jax-cuda13-plugin', 'jax-cuda13-pjrt', 'jax-cuda12-plugin',
                 'jax-cuda12-pjrt')
# Test selection on the GPU: the model (cuDNN's attention against XLA's among it), the step
# and exact resume, divergence, the uint8 inputs, a checkpoint's restore. The CLI end to end
# is the `train` part. About 60 s on 2 CPU cores.
GPU_TESTS = ['tests/test_model.py', 'tests/test_train.py::test_loss_falls',
             'tests/test_train.py::test_resume_is_exact',
             'tests/test_train.py::test_divergence_stops_and_keeps_last_good_checkpoint',
             'tests/test_train.py::test_uint8_inputs_train_bit_for_bit_as_float32_inputs',
             'tests/test_api.py::test_load_restores_the_parameters_of_a_run']
CPU_TESTS = ['tests/test_model.py::test_sequence_longer_than_positions_is_refused']


class Mode:
  """Budgets and sizes of one mode; seconds are wall-clock limits."""

  def __init__(self, cpu: bool):
    self.cpu = cpu
    # At most 6 minutes on the GPU, so that the check runs twice in a 15-minute rental
    # with the machine's start; the parts' budgets add up to the total.
    self.total_s = 270 if cpu else 340
    self.budget_s = (dict(setup=30, tests=40, throughput=75, sweep=60, train=60) if cpu else
                     dict(setup=40, tests=80, throughput=100, sweep=40, train=80))
    self.tests = CPU_TESTS if cpu else GPU_TESTS
    # throughput: matmul size, steps per timed window, windows, seconds of timed steps a row.
    self.peak_n, self.steps, self.windows, self.row_budget_s = (
        (256, 2, 2, 0.5) if cpu else (8192, 50, 3, 2.0))
    # The rows in order of interest, each with its deadline in seconds (compiling
    # included): a row past it is stopped and reported, and the next one starts.
    self.rows = (
        # On a CPU shared with other jobs (the test suite's), few and generous: the plumbing
        # of both configs and both dtypes is what counts there.
        [('matmul_peak', 25), ('gpicl_paper_784/float32', 30), ('garg_tiny/bfloat16', 30)]
        if cpu else
        [('matmul_peak', 12), ('gpicl_paper_784/bfloat16', 25),
         ('gpicl_paper_784/float32', 20), ('garg_small/bfloat16', 15),
         ('garg_tiny/bfloat16', 12), ('garg_tiny/float32', 10)])
    self.sweep = ('digits_w16', 2, 2) if cpu else ('digits_w64', 16, 30)
    # train: seconds of steps to aim for, and the step count's bounds.
    self.train_s, self.min_steps, self.max_steps = (2.0, 10, 60) if cpu else (35.0, 300,
                                                                             200_000)


# =======================================================================================
# Output: JSON lines on stdout and in OUT/device_check.jsonl
# =======================================================================================
class Reporter:

  def __init__(self, out_dir: str | None):
    self.out_dir = out_dir
    self.path = None
    self.lock = threading.Lock()
    if out_dir:
      os.makedirs(out_dir, exist_ok=True)
      self.path = os.path.join(out_dir, 'device_check.jsonl')
      open(self.path, 'w').close()

  def emit(self, record: dict[str, Any]) -> None:
    line = json.dumps(record, default=str)
    with self.lock:
      print(line, flush=True)
      if self.path:
        with open(self.path, 'a') as f:
          f.write(line + '\n')


def tail(path: str, chars: int = 2000) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 4 * chars))
      text = f.read().decode('utf-8', 'replace')
  except OSError:
    return ''
  text = re.sub(r'[^\n]*\r', '', text)  # Progress bars' overwritten lines.
  return text[-chars:]


def run_process(cmd: list[str], env: dict[str, str], log_path: str, timeout_s: float,
                on_json: Callable[[dict], None] | None = None,
                watchdog: Callable[[], str | None] | None = None
                ) -> tuple[int | None, list[dict], str | None]:
  """Runs `cmd` in its own process group, its stderr (and non-JSON stdout) to `log_path`.

  Returns (exit code, the JSON objects it printed on stdout, why it was stopped). It is
  stopped (code None) after `timeout_s`, or as soon as `watchdog()`, asked twice a second,
  names a reason; the whole group is killed, so a child's own children (pytest's
  subprocess tests) go too.
  """
  records: list[dict] = []
  with open(log_path, 'ab') as log:
    log.write(f'$ {" ".join(cmd)}\n'.encode())
    log.flush()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log,
                            start_new_session=True)

    def read():
      for raw in proc.stdout:
        line = raw.decode('utf-8', 'replace')
        if line.startswith('{'):
          try:
            record = json.loads(line)
          except ValueError:
            record = None
          if isinstance(record, dict):
            records.append(record)
            if on_json:
              on_json(record)
            continue
        log.write(raw)
        log.flush()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + max(timeout_s, 1.0)
    stopped = None
    while proc.poll() is None and stopped is None:
      if time.monotonic() > deadline:
        stopped = f'timeout after {timeout_s:.0f} s'
      elif watchdog:
        stopped = watchdog()
      if stopped is None:
        time.sleep(0.5)
    if stopped is not None:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      log.write(f'[device_check] stopped: {stopped}\n'.encode())
    code = proc.wait()
    reader.join(timeout=10)
  return (None if stopped else code), records, stopped


# =======================================================================================
# The parts, as the orchestrator runs them (no JAX in this process)
# =======================================================================================
class Check:

  def __init__(self, args):
    self.args = args
    self.mode = Mode(args.cpu)
    self.start = time.monotonic()
    self.report = Reporter(args.out)
    self.work = tempfile.mkdtemp(prefix='icl_jax_device_check_')
    self.log_dir = args.out or tempfile.mkdtemp(prefix='icl_jax_device_check_logs_')
    self.site = os.path.join(self.work, 'site')
    self.results: dict[str, dict] = {}
    self.env = dict(os.environ)
    self.env.update(PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='3',
                    TFDS_DATA_DIR=os.path.join(self.work, 'tfds'))
    # One persistent compilation cache for the parts: a program that two parts build (the
    # same shapes) compiles once. Timings exclude compilation either way.
    self.env.update(JAX_COMPILATION_CACHE_DIR=os.path.join(self.work, 'jax_cache'),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    self.env['PYTHONPATH'] = os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    if args.cpu:
      self.env['JAX_PLATFORMS'] = 'cpu'  # The smoke run stays on the CPU on any host.
      # It checks the plumbing, not speed: skip LLVM's optimisation passes, most of the
      # compile time of these tiny programs (as tests/conftest.py does).
      self.env['XLA_FLAGS'] = (self.env.get('XLA_FLAGS', '') +
                               ' --xla_backend_optimization_level=0').strip()
    self.platform = None

  def left(self) -> float:
    return self.mode.total_s - (time.monotonic() - self.start)

  def child(self, part: str, extra: list[str], timeout_s: float, env=None):
    cmd = [sys.executable, os.path.abspath(__file__), '--child', part] + extra
    if self.args.cpu:
      cmd.append('--cpu')

    def relay(record):
      if 'row' in record:
        self.report.emit({'part': part, **record})
    code, records, _ = run_process(cmd, env or self.env, self.log(part), timeout_s, relay)
    return code, records

  def log(self, part: str) -> str:
    return os.path.join(self.log_dir, f'{part}.log')

  def run(self) -> int:
    wanted = self.args.parts.split(',') if self.args.parts else list(PARTS)
    for part in PARTS:
      if part not in wanted:
        continue
      budget = min(self.mode.budget_s[part], self.left())
      began = time.monotonic()
      result: dict[str, Any] = {'part': part}
      if part != 'setup' and self.platform_missing():
        result.update(status='skipped', reason=self.platform_missing())
      elif budget < 5:
        result.update(status='skipped', reason=f'out of time ({self.left():.0f} s left of '
                                               f'{self.mode.total_s} s)')
      else:
        try:
          result.update(getattr(self, f'part_{part}')(budget))
        except Exception as e:  # pylint: disable=broad-except
          result.update(status='failed', error=f'{type(e).__name__}: {e}')
        result.setdefault('status', 'ok')
        if result['status'] == 'failed':
          result.setdefault('log_tail', tail(self.log(part)))
      result.update(seconds=round(time.monotonic() - began, 1), budget_s=round(budget, 1))
      self.results[part] = result
      self.report.emit(result)
    if not self.args.keep:  # Wheels installed, data, caches, the trained workdir.
      shutil.rmtree(self.work, ignore_errors=True)
    statuses = {p: r['status'] for p, r in self.results.items()}
    ok = all(s != 'failed' for s in statuses.values())
    self.report.emit({'part': 'summary', 'status': 'ok' if ok else 'failed', 'parts': statuses,
                      'mode': 'cpu' if self.args.cpu else 'gpu', 'platform': self.platform,
                      'seconds': round(time.monotonic() - self.start, 1),
                      'total_budget_s': self.mode.total_s, 'logs': self.log_dir,
                      'work': self.work if self.args.keep else None})
    return 0 if ok else 1

  def platform_missing(self) -> str | None:
    """Why the accelerator parts cannot run: JAX found no GPU where one was expected."""
    if self.args.cpu or self.args.force or 'setup' not in self.results:
      return None
    if self.platform != 'gpu':
      return f'no GPU: jax runs on {self.platform!r} (see the setup part)'
    return None

  # --- setup ---------------------------------------------------------------------------
  def part_setup(self, budget: float) -> dict:
    began = time.monotonic()
    out: dict[str, Any] = {}
    if self.args.cpu and not self.args.wheels:
      out['install'] = 'skipped in --cpu mode (the local environment has everything)'
    else:
      out.update(self.install_wheels())
    code, records = self.child('setup', [], budget - (time.monotonic() - began))
    env = next((r for r in records if r.get('env')), None)
    if env is None:
      out.update(status='failed', error=f'import check exited with {code}')
      return out
    out.update(env['env'])
    self.platform = env['env'].get('platform')
    if code != 0 or env['env'].get('errors'):
      out.update(status='failed', error=f'import check exited with {code}: '
                                        f'{env["env"].get("errors")}')
    elif not self.args.cpu and self.platform != 'gpu':
      out.update(status='failed', error=f'jax runs on {self.platform!r}, not on a GPU')
    return out

  def install_wheels(self) -> dict:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    folder = self.args.wheels or os.path.join(REPO, '.device_wheels')
    wheels = sorted(glob.glob(os.path.join(folder, '*.whl')))
    if not wheels:
      raise RuntimeError(f'no wheels in {folder}: run `bash '
                         f'benchmarks/device_wheels.sh` on a host with PyPI and carry '
                         f'.device_wheels')
    fallback_file = os.path.join(folder, 'fallback.txt')
    fallback = set()
    if os.path.exists(fallback_file):
      fallback = {canonical(line.split('==')[0]) for line in open(fallback_file) if line.strip()}
    install, kept = [], {}
    for wheel in wheels:
      name = canonical(os.path.basename(wheel).split('-')[0])
      if name in NEVER_INSTALL:
        continue
      try:
        present = metadata.version(name)
      except metadata.PackageNotFoundError:
        present = None
      if present is None or (name in fallback and self.args.prefer_wheels):
        install.append(wheel)
      else:
        kept[name] = present
    if install:
      cmd = [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-index', '--no-deps',
             '--no-compile', '--no-cache-dir', '--disable-pip-version-check', '--target',
             self.site] + install
      code, _, _ = run_process(cmd, self.env, self.log('setup'), 120)
      if code != 0:
        raise RuntimeError(f'pip install exited with {code}')
      self.env['PYTHONPATH'] = os.pathsep.join([self.site, self.env['PYTHONPATH']])
    return {'installed': [os.path.basename(w) for w in install], 'kept_from_image': kept,
            'site': self.site if install else None}

  # --- tests ---------------------------------------------------------------------------
  def part_tests(self, budget: float) -> dict:
    env = dict(self.env)
    expected = 'cpu' if self.args.cpu else 'gpu'
    if not self.args.cpu:
      env['ICL_JAX_TEST_PLATFORM'] = 'gpu'
      # pytest's subprocess tests start JAX beside the pytest process: neither may grab
      # three quarters of the GPU's memory up front.
      env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
      env.pop('JAX_PLATFORMS', None)
    selection = self.args.tests.split() if self.args.tests else self.mode.tests
    # -v: one line per test as it ends, so a run cut off by its budget still counts.
    cmd = [sys.executable, '-m', 'pytest', '-v', '-p', 'no:cacheprovider', '-rfE',
           '--tb=short', '--durations=5'] + selection
    code, _, _ = run_process(cmd, env, self.log('tests'), budget)
    text = tail(self.log('tests'), 500_000)
    results = dict(re.findall(r'^(tests/.+?) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b',
                              text, re.M))  # Ids may hold spaces: '[... by the 8 devices]'.
    counts = {k: sum(v == k.upper() for v in results.values())
              for k in ('passed', 'failed', 'skipped')}
    counts['errors'] = sum(v == 'ERROR' for v in results.values())
    header = re.search(r'icl_jax test platform: (\w+) \(([^)]*)\)', text)
    out = {**counts, 'selection': selection, 'platform': header and header.group(1),
           'devices': header and header.group(2),
           'failures': [t for t, v in results.items() if v in ('FAILED', 'ERROR')][:20]}
    durations = re.findall(r'^([\d.]+)s (?:call|setup|teardown)\s+(\S+)', text, re.M)
    out['slowest'] = [[t, float(d)] for d, t in durations[:5]]
    if code is None:
      out.update(status='failed', error=f'timeout after {budget:.0f} s')
    elif code != 0 or counts['failed'] or counts['errors']:
      out.update(status='failed', error=f'pytest exited with {code}')
    elif header is None:
      out.update(status='failed', error='tests/conftest.py printed no "icl_jax test '
                                        'platform" header: where the tests ran is unknown')
    elif out['platform'] != expected:
      out.update(status='failed', error=f'the tests ran on {out["platform"]!r}, not '
                                        f'{expected!r}: is tests/conftest.py forcing the CPU?')
    elif not counts['passed']:
      out.update(status='failed', error='no test passed')
    return out

  # --- throughput ----------------------------------------------------------------------
  def part_throughput(self, budget: float) -> dict:
    """Rows one after another in one child; a row past its deadline is stopped and
    reported, and a fresh child goes on with the rows after it."""
    began = time.monotonic()
    deadlines = {**dict(self.mode.rows), **self.args.deadlines}
    pending = [name for name, _ in self.mode.rows]
    rows: list[dict] = []
    while pending:
      left = budget - (time.monotonic() - began)
      if left < 5:
        rows += [self.row_result({'row': r, 'skipped': 'out of the part\'s time'})
                 for r in pending]
        break
      running: dict[str, Any] = {}

      def on_json(record, running=running, rows=rows):
        if 'row_start' in record:
          running.update(row=record['row_start'], since=time.monotonic())
        elif 'row' in record:
          running.clear()
          rows.append(self.row_result(record))

      def overran(running=running):
        if running and time.monotonic() - running['since'] > deadlines[running['row']]:
          return f'row {running["row"]} ran past its deadline of {deadlines[running["row"]]} s'
        return None

      cmd = [sys.executable, os.path.abspath(__file__), '--child', 'throughput',
             f'--rows={",".join(pending)}'] + (['--cpu'] if self.args.cpu else [])
      code, records, stopped = run_process(cmd, self.env, self.log('throughput'), left,
                                           on_json, overran)
      done = {r['row'] for r in records if 'row' in r}
      pending = [r for r in pending if r not in done]
      if running:  # Stopped, or crashed, inside this row: report it, go on with the next.
        why = stopped or f'the child exited with {code} (log_tail)'
        rows.append(self.row_result({'row': running['row'], 'error': f'stopped: {why}'}))
        pending.remove(running['row'])
      elif code != 0 or stopped:  # Outside any row (startup): the rest cannot run either.
        rows += [self.row_result({'row': r, 'error': f'not run: child exited with {code}'
                                                     f'{", " + stopped if stopped else ""}'})
                 for r in pending]
        break
    out: dict[str, Any] = {'rows': [compact_row(r) for r in rows]}
    errors = [r for r in rows if r.get('error')]
    if errors:
      out.update(status='failed', error=f'{len(errors)} row(s) failed: '
                                        f'{", ".join(r["row"] for r in errors)}')
    elif not any('steps_per_sec' in r for r in rows):
      out.update(status='failed', error='no row measured')
    return out

  def row_result(self, record: dict) -> dict:
    """A throughput row, reported on stdout as it comes (with its part's name)."""
    self.report.emit({'part': 'throughput', **record})
    return record

  # --- sweep ---------------------------------------------------------------------------
  def part_sweep(self, budget: float) -> dict:
    workload, runs, steps = self.mode.sweep
    code, records = self.child('sweep', [f'--sweep={workload},{runs},{steps}'], budget)
    rows = [r for r in records if r.get('benchmark') == 'sweep_scaling']
    if code is None:
      return {'status': 'failed', 'error': f'timeout after {budget:.0f} s'}
    if code != 0 or not rows:
      return {'status': 'failed', 'error': f'exited with {code}'}
    keep = ('workload', 'runs', 'devices', 'platform', 'strategy',
            'group_run_steps_per_sec',
            'sequential_run_steps_per_sec', 'speedup', 'steps')
    return {k: rows[-1][k] for k in keep if k in rows[-1]}

  # --- train ---------------------------------------------------------------------------
  def part_train(self, budget: float) -> dict:
    began = time.monotonic()
    rate, source = None, None
    paper = (self.results.get('throughput') or {}).get('rows') or []
    for row in paper:  # The 784-input step is slower than the 8x8 one trained here.
      if row.get('row') == 'gpicl_paper_784/float32' and row.get('steps_per_sec'):
        rate, source = row['steps_per_sec'], 'throughput gpicl_paper_784/float32'
    if rate is None:  # The throughput part did not run or failed: measure here.
      code, records = self.child('calibrate', [], min(60.0, budget / 3))
      found = [r for r in records if 'steps_per_sec' in r]
      if not found:
        return {'status': 'failed', 'error': f'calibration exited with {code} and no rate'}
      rate, source = found[-1]['steps_per_sec'], 'calibration'
    remaining = budget - (time.monotonic() - began)
    # Startup, data, compilation and evaluations take about 35 s on a GPU, and reading the
    # results back `reserve`; the loop reads each step's metrics one step late, so it runs
    # somewhat below the benchmark's rate.
    reserve = 15 if self.args.cpu else 10
    seconds = max(1.0, min(self.mode.train_s,
                           remaining - reserve - (25 if self.args.cpu else 35)))
    steps = int(rate * seconds * 0.85)
    steps = max(self.mode.min_steps, min(self.mode.max_steps, steps // 10 * 10))
    evals = 5
    workdir = os.path.join(self.work, 'train')
    arg = 'num_tasks=65536' + (',smoke' if self.args.cpu else '') + f',steps={steps}'
    cmd = [sys.executable, '-m', 'icl_jax.main',
           f'--config={os.path.join(REPO, "experiments", "gpicl_mnist.py")}:{arg}',
           f'--workdir={workdir}', '--config.data.dataset=digits',
           '--config.data.image_shape=(8, 8)',
           f'--config.train.steps={steps}',  # :smoke sets its own.
           f'--config.train.log_every_steps={max(1, steps // 100)}',
           f'--config.train.eval_every_steps={max(1, steps // evals)}',
           f'--config.train.checkpoint_every_steps={max(1, steps // 2)}']
    out: dict[str, Any] = {'config': f'experiments/gpicl_mnist.py:{arg} on digits (8x8)',
                           'steps_target': steps, 'rate_from': source,
                           'rate_steps_per_sec': rate}
    # Reading the metrics needs icl_jax (and ml_collections): a child reads them.
    code, _, _ = run_process(cmd, self.env, self.log('train'),
                             budget - reserve - (time.monotonic() - began))
    _, read = self.child('read_train', [f'--workdir={workdir}'],
                         max(5.0, budget - (time.monotonic() - began)))
    out.update(next((r['training'] for r in read if 'training' in r), {}))
    if code is None:
      out.update(status='failed', error=f'timeout after {budget:.0f} s (results so far above)')
    elif code != 0:
      out.update(status='failed', error=f'icl_jax.main exited with {code}')
    elif not out.get('evals'):
      out.update(status='failed', error='no evaluation was written')
    return out


def parse_deadlines(text: str) -> dict[str, float]:
  try:
    return {row: float(seconds) for row, _, seconds in
            (item.partition('=') for item in filter(None, text.split(',')))}
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'expected ROW=SECONDS[,ROW=SECONDS], got {text!r}') from None


def canonical(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def compact_row(row: dict) -> dict:
  keep = ('row', 'config', 'dtype', 'steps_per_sec', 'examples_per_sec', 'flops_per_sec',
          'peaks', 'peak_dtype', 'peak_flops_per_sec', 'mfu', 'mfu_vs_fp32_peak', 'roofline',
          'seconds', 'skipped', 'error')
  return {k: row[k] for k in keep if k in row}


# =======================================================================================
# Children: the parts that run JAX, each in its own process
# =======================================================================================
def emit(record: dict) -> None:
  print(json.dumps(record, default=str), flush=True)


def child_read_train(args) -> None:
  """Seen/unseen accuracy at every evaluation of the `train` part's run, its loss curve and
  what it says: {'training': {...}} ({} if it wrote no metrics)."""
  emit({'training': read_training(args.workdir)})


def read_training(workdir: str) -> dict:
  from icl_jax import diagnose  # pylint: disable=g-import-not-at-top  (no JAX)
  from icl_jax import metrics  # pylint: disable=g-import-not-at-top
  try:
    records = metrics.read(workdir)
  except Exception:  # pylint: disable=broad-except
    records = []
  if not records:
    return {}
  keys = ('seen/acc_first', 'seen/acc_last', 'unseen/acc_first', 'unseen/acc_last')
  evals = [{'step': r['step'], **{k: round(r[k], 4) for k in keys}}
           for r in records if all(k in r for k in keys)]
  losses = [(r['step'], r['train/loss']) for r in records if 'train/loss' in r]
  rates = sorted(r['train/steps_per_sec'] for r in records if 'train/steps_per_sec' in r)
  every = max(1, len(losses) // 20)  # About 20 points of the curve, and the last.
  curve = losses[::every] + ([losses[-1]] if losses and (len(losses) - 1) % every else [])
  out = {'steps_done': max(r['step'] for r in records), 'evals': evals,
         'loss_curve': [[s, round(loss, 4)] for s, loss in curve],
         'loss_last': losses[-1][1] if losses else None,
         'loss_min': min(loss for _, loss in losses) if losses else None,
         'plateau_length': diagnose.plateau_length(records, 10),
         'train_steps_per_sec_median': rates[len(rates) // 2] if rates else None}
  if evals:
    out['final'] = evals[-1]
    out['phase'] = diagnose.phase(evals[-1], 10)
  return out


def child_setup(args) -> None:
  """Imports what the project needs and reports versions, their origin and the devices."""
  del args
  import importlib  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top
  info: dict[str, Any] = {'python': platform.python_version(), 'host': platform.node()}
  errors = {}
  versions, origins = {}, {}
  for module, dist in (('jax', 'jax'), ('jaxlib', 'jaxlib'), ('flax', 'flax'),
                       ('optax', 'optax'), ('orbax.checkpoint', 'orbax-checkpoint'),
                       ('chex', 'chex'), ('ml_collections', 'ml-collections'),
                       ('tensorflow_datasets', 'tensorflow-datasets'),
                       ('array_record', 'array-record'), ('tensorboardX', 'tensorboardX'),
                       ('sklearn', 'scikit-learn'), ('numpy', 'numpy'), ('pytest', 'pytest'),
                       ('icl_jax.train', None), ('icl_jax.evaluate', None)):
    try:
      m = importlib.import_module(module)
      origins[module] = os.path.dirname(getattr(m, '__file__', '') or '')
      if dist:
        versions[dist] = metadata.version(dist)
    except Exception as e:  # pylint: disable=broad-except
      errors[module] = f'{type(e).__name__}: {e}'[:500]
  for dist in ('jax-cuda13-plugin', 'jax-cuda12-plugin'):
    try:
      versions[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  info.update(versions=versions, origins=origins, errors=errors)
  try:
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.devices()[0]
    info.update(platform=device.platform, device_kind=device.device_kind,
                num_devices=jax.device_count(), backend=jax.default_backend())
  except Exception as e:  # pylint: disable=broad-except
    errors['jax.devices'] = f'{type(e).__name__}: {e}'[:500]
  emit({'env': info})


def child_throughput(args) -> None:
  """The rows named in --rows, in order: {'row_start': name} as each begins (the
  orchestrator holds it to its deadline), then the row's record."""
  import bench_common as common  # pylint: disable=g-import-not-at-top  (runtime settings first)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  mode = Mode(args.cpu)
  on_cpu = jax.devices()[0].platform == 'cpu'
  peaks = {}
  for name in args.rows.split(','):
    emit({'row_start': name})
    if name == 'matmul_peak':
      # MFU is against the measured bf16 peak (the accelerator's ceiling); a CPU's bf16
      # matmuls are emulated, so there the fp32 peak is the ceiling.
      for dtype in ((jnp.float32,) if on_cpu else (jnp.bfloat16, jnp.float32)):
        peak = common.matmul_peak(mode.peak_n, dtype)
        peaks[peak['dtype']] = peak['flops_per_sec']
      emit({'row': name, **common.header('matmul_peak'), 'peaks': peaks,
            'flops_per_sec': peaks.get('bfloat16', peaks['float32'])})
      continue
    try:
      emit(throughput_row(name, args.cpu, peaks))
    except Exception as e:  # pylint: disable=broad-except
      emit({'row': name, 'error': f'{type(e).__name__}: {e}'[:2000]})


def throughput_row(name: str, cpu: bool, peaks: dict[str, float]) -> dict:
  """Steps/s, MFU and the roofline's band for one row, `config/dtype`."""
  import bench_common as common  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import roofline  # pylint: disable=g-import-not-at-top
  import train_throughput as tt  # pylint: disable=g-import-not-at-top
  from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config_name, dtype = name.split('/')
  mode = Mode(cpu)
  began = time.monotonic()
  if config_name == 'gpicl_paper_784':
    config = tt.gpicl_paper_config()
    # MNIST's 784 inputs: the digits resized. (Not in --cpu mode, whose CPU would spend
    # its seconds drawing 784 x 784 task projections.)
    config.data.image_shape = (8, 8) if cpu else (28, 28)
  else:
    config = tt.garg_config(config_name)
  if cpu:  # The smallest shapes: the plumbing, not the speed.
    config_lib.shrink_for_smoke(config)
    config.eval.last_positions = min(config.eval.last_positions, config.task.seq_len)
  config.model.dtype = dtype
  run, program, live = tt.framework_program(config)
  rate = common.windows(run, 1, mode.steps, mode.windows, mode.row_budget_s)
  spec = program.spec
  flops = tt.model_flops(config, spec.num_features + spec.num_classes, spec.num_classes)
  peak = peaks.get('bfloat16') or peaks.get('float32') or float('nan')
  m = config.model
  flops_per_sec = rate['median'] * flops['flops_per_step']
  row = {'row': name, 'config': config_name, 'dtype': dtype,
         'model': f'{m.width}w {m.depth}L {m.num_heads}h x {m.qkv_size}, mlp {m.mlp_ratio}x',
         'in_features': spec.num_features + spec.num_classes,
         'batch_size': config.train.batch_size, 'steps_per_sec': rate['median'],
         'steps_per_sec_min': rate['min'], 'steps_per_sec_max': rate['max'],
         'steps_per_window': rate['calls_per_window'],
         'examples_per_sec': rate['median'] * config.train.batch_size, **flops,
         'flops_per_sec': flops_per_sec, 'peak_flops_per_sec': peak,
         'peak_dtype': 'bfloat16' if 'bfloat16' in peaks else 'float32',
         'mfu': flops_per_sec / peak}
  if 'bfloat16' in peaks:
    row['mfu_vs_fp32_peak'] = flops_per_sec / peaks['float32']
  # The roofline's prediction from this device's own compiled program; on a CPU (--cpu)
  # against the H100's peaks, which only checks the plumbing.
  costs = roofline.program_costs(program.step, live(), *program.inputs)
  device = roofline.device_for(jax.devices()[0].device_kind) or 'h100'
  band = roofline.predict(costs['flops'], costs['bytes_accessed'], costs['kernels'], device)
  row['roofline'] = {'device': device, **costs, **common.rounded(band),
                     'measured_over_high': rate['median'] / band['steps_per_sec_high'],
                     'within_band': (band['steps_per_sec_low'] <= rate['median'] <=
                                     band['steps_per_sec_high'])}
  row['seconds'] = round(time.monotonic() - began, 1)
  return row


def child_sweep(args) -> None:
  import sweep_scaling  # pylint: disable=g-import-not-at-top  (applies runtime settings)
  from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  workload, runs, steps = args.sweep.split(',')
  if args.cpu:  # The smallest shapes: the plumbing, not the speed.
    make = sweep_scaling.WORKLOADS[workload]
    sweep_scaling.WORKLOADS[workload] = lambda i: config_lib.shrink_for_smoke(make(i))
  emit(sweep_scaling.measure(workload, int(runs), int(steps)))


def child_calibrate(args) -> None:
  """Steps/s of the `train` part's config, when the throughput part gave none."""
  import bench_common as common  # pylint: disable=g-import-not-at-top
  from icl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from icl_jax import presets  # pylint: disable=g-import-not-at-top
  import train_throughput as tt  # pylint: disable=g-import-not-at-top
  config = presets.gpicl_mnist(2**16, 256, 1000)
  config.data.dataset, config.data.image_shape = 'digits', (8, 8)
  if args.cpu:
    config_lib.shrink_for_smoke(config)
  run, _, _ = tt.framework_step(config)
  mode = Mode(args.cpu)
  rate = common.windows(run, 1, mode.steps, mode.windows, mode.row_budget_s)
  emit({'steps_per_sec': rate['median']})


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cpu', action='store_true',
                      help='Smoke mode on the CPU: tiny budgets and shapes, no wheel install.')
  parser.add_argument('--out', default=os.environ.get('OUT') or None,
                      help='Folder for device_check.jsonl and the parts\' logs (default $OUT).')
  parser.add_argument('--wheels', default='',
                      help='Folder of wheels to install where missing (default .device_wheels; '
                           'in --cpu mode only when given).')
  parser.add_argument('--prefer_wheels', action='store_true',
                      help='Install the fallback wheels (flax, optax, orbax, chex) even where '
                           'the image has them.')
  parser.add_argument('--parts', default='', help=f'Comma-separated subset of {PARTS}.')
  parser.add_argument('--tests', default='', help='pytest arguments replacing the selection.')
  parser.add_argument('--force', action='store_true',
                      help='Run the GPU parts even where JAX finds no GPU.')
  parser.add_argument('--keep', action='store_true',
                      help='Keep the work folder (installed wheels, data, the trained workdir).')
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--deadlines', default='', type=parse_deadlines,
                      help='Row deadlines in seconds replacing the mode\'s, e.g. '
                           '"gpicl_paper_784/bfloat16=40,garg_small/bfloat16=20".')
  parser.add_argument('--rows', default='', help=argparse.SUPPRESS)
  parser.add_argument('--workdir', default='', help=argparse.SUPPRESS)
  parser.add_argument('--sweep', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = set(filter(None, args.parts.split(','))) - set(PARTS)
  if unknown:
    parser.error(f'unknown part(s) {sorted(unknown)}; choose from {PARTS}')
  if args.child:
    sys.path.insert(0, HERE)
    sys.path.insert(1, REPO)
    {'setup': child_setup, 'throughput': child_throughput, 'sweep': child_sweep,
     'calibrate': child_calibrate, 'read_train': child_read_train}[args.child](args)
    return 0
  return Check(args).run()


if __name__ == '__main__':
  sys.exit(main())
