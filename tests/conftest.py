"""Test setup: 8 simulated CPU devices, strict rank promotion, one shared TFDS data dir.

`ICL_JAX_TEST_PLATFORM=gpu` (or `tpu`) opts out of the CPU setup, for running selected
tests on an accelerator (benchmarks/device_check.py does): the platform and device count
are left to JAX, and the session stops at once if JAX's default device is not on that
platform. Tests that need several devices skip (or fail) on one. Unset or `cpu`: the CPU
setup below, as CI runs it.
"""

import os
import shutil
import tempfile

TEST_PLATFORM = os.environ.get('ICL_JAX_TEST_PLATFORM', 'cpu').strip().lower() or 'cpu'

# Must precede the first jax import anywhere in the test session.
# Compiling, not running, is most of the time of these tiny programs, and LLVM's
# optimisation passes are most of compiling: tests skip them (results are the same
# programs' results; speed is measured in benchmarks/, never here). Subprocesses that
# set their own device count keep this flag (see subprocess_xla_flags).
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
# pytest-xdist workers (`make test` runs two) inherit the controller's environment, with
# these flags already in it.
XDIST_WORKER = os.environ.get('PYTEST_XDIST_WORKER')
if TEST_PLATFORM == 'cpu':
  if not XDIST_WORKER:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}'
                              ).strip()
  # The CPU even on a host with a GPU plugin installed: the sharding tests need the 8
  # simulated devices above. Subprocesses inherit it.
  os.environ['JAX_PLATFORMS'] = 'cpu'
elif os.environ.get('JAX_PLATFORMS', '').strip() == 'cpu':
  # A CPU forcing inherited from the caller would defeat the opt-out: leave it to JAX.
  del os.environ['JAX_PLATFORMS']
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_numpy_rank_promotion', 'raise')
# Tests train many runs of one tiny shape, each through fresh jit-ed closures: a persistent
# cache (new for every session) lets identical programs compile once. Subprocess tests
# set their own. xdist workers share the controller's, which removes it at the end.
_CACHE_DIR = os.environ.get('ICL_JAX_TEST_CACHE') if XDIST_WORKER else None
if not _CACHE_DIR:
  _CACHE_DIR = tempfile.mkdtemp(prefix='icl_jax_test_jax_cache_')
  os.environ['ICL_JAX_TEST_CACHE'] = _CACHE_DIR
# Entry points run as subprocesses use it too (runtime.default_compilation_cache), rather
# than the user's ~/.cache.
os.environ.setdefault('ICL_JAX_COMPILATION_CACHE', _CACHE_DIR)
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_report_header(config):
  del config
  device = jax.devices()[0]
  # benchmarks/device_check.py reads this line to tell where the tests really ran.
  return (f'icl_jax test platform: {device.platform} ({jax.device_count()} x '
          f'{device.device_kind}), ICL_JAX_TEST_PLATFORM={TEST_PLATFORM}')


def pytest_sessionfinish(session, exitstatus):
  """The session's compilation cache goes with it (~20 MB each, left in /tmp before)."""
  del session, exitstatus
  if not XDIST_WORKER:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def pytest_sessionstart(session):
  del session
  if TEST_PLATFORM != 'cpu' and jax.devices()[0].platform != TEST_PLATFORM:
    pytest.exit(f'ICL_JAX_TEST_PLATFORM={TEST_PLATFORM}, but JAX runs on '
                f'{jax.devices()[0].platform}: {jax.devices()}', returncode=4)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS data dir shared by the session: the digits builder is prepared into it once."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='session')
def trained_run(data_dir, tmp_path_factory):
  """(workdir, config, summary) of one tiny run on all 8 devices, shared by test modules."""
  from helpers import tiny_config  # pylint: disable=g-import-not-at-top
  from icl_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('trained'))
  config = tiny_config(data_dir)
  summary = train.train_and_evaluate(config, workdir)
  return workdir, config, summary


@pytest.fixture(scope='session')
def slurm_cluster():
  """A real SLURM cluster on this host for the tests marked `slurm` (tests/slurm_cluster.py:
  munged, slurmctld and 2 slurmd with 2 fake GPUs each), stopped at the end; the tests skip
  with one reason where SLURM is not installed."""
  import slurm_cluster as cluster_lib  # pylint: disable=g-import-not-at-top
  if cluster_lib.why_not():
    pytest.skip(cluster_lib.why_not())
  # Not under pytest's own temporary folder: munged wants every folder above its socket
  # open to all, and pytest's is private.
  directory = tempfile.mkdtemp(prefix='icl_jax_slurm_')
  os.chmod(directory, 0o755)
  cluster = cluster_lib.Cluster(directory)
  try:
    cluster.start()
    yield cluster
  finally:
    cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)
