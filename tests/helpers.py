"""Shared by the test modules: the tiny config every training test uses, file snapshots."""

import hashlib
import os

from icl_jax import config as config_lib


def tiny_config(data_dir, **overrides):
  """Seconds per run on CPU. Overrides are section__field=value."""
  c = config_lib.base_config()
  c.data.data_dir = data_dir
  c.task.num_tasks = 4  # Memorisation: the loss falls within tens of steps.
  c.task.seq_len = 10
  c.model.width, c.model.depth, c.model.num_heads, c.model.qkv_size = 16, 1, 2, 8
  c.train.batch_size = 16
  c.train.lr = 3e-3
  c.train.steps = 40
  c.train.log_every_steps = 5
  c.train.eval_every_steps = 1000
  c.train.checkpoint_every_steps = 20
  c.eval.num_episodes = 16
  for path, value in overrides.items():
    section, field = path.split('__')
    c[section][field] = value
  return c


_BUILDERS = {}  # TFDS registers builder classes by name: define each one once per session.


def prepare_image_dataset(data_dir, dataset_name, image_shape_HxWxC, num_classes, make_image,
                          num_examples=40):
  """Prepares a small TFDS image-classification dataset offline (array_record) in data_dir.

  make_image(rng, index) -> uint8 image of image_shape_HxWxC; labels are index % num_classes.
  """
  import os  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if dataset_name not in _BUILDERS:

    class Builder(tfds.core.GeneratorBasedBuilder):
      name = dataset_name
      VERSION = tfds.core.Version('1.0.0')
      RELEASE_NOTES = {'1.0.0': 'Test fixture.'}
      # TFDS looks for README/citation files beside the builder's package; tests have none.
      pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))

      @tfds.core.utils.classproperty
      @classmethod
      def code_path(cls) -> epath.Path:
        return epath.Path(__file__)  # See icl_jax/data/digits.py: TFDS cannot derive it.

      def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=image_shape_HxWxC, dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=num_classes),
        }))

      def _split_generators(self, dl_manager):
        del dl_manager
        return {'train': self._generate_examples(0), 'test': self._generate_examples(1)}

      def _generate_examples(self, seed):
        r = np.random.default_rng(seed)
        for i in range(num_examples):
          yield i, {'image': make_image(r, i), 'label': i % num_classes}

    _BUILDERS[dataset_name] = Builder
  _BUILDERS[dataset_name](data_dir=data_dir).download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def restored_logits(workdir, num_devices):
  """Logits of the workdir's latest checkpoint, restored onto `num_devices` devices, on the
  first unseen-task evaluation episodes (the same episodes whatever the device count)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from icl_jax import evaluator, recovery, sharding, steps, workload  # pylint: disable=g-import-not-at-top
  reader, step, config = recovery.open_run(workdir)
  config.mesh.data, config.mesh.run = num_devices, -1
  mesh = sharding.make_mesh(config.mesh)
  wl = workload.build(config)
  state = reader.store.restore_state(step, wl.abstract_on(mesh))
  reader.store.close()
  assert len(jax.tree.leaves(state['params'])[0].sharding.device_set) == num_devices
  sets = evaluator.make_eval_sets(wl, mesh)
  run = sharding.put(steps.run_values(config), sharding.replicated(mesh))
  episode = evaluator.Evaluator(wl, mesh, sets, 16).episodes(sets[1], run)[0]
  return np.asarray(jax.jit(wl.spec.logits)(state['params'], episode))


def contend_for_lease(workdir, barrier, results):
  """A process that tries to take a workdir's lease at the same moment as others (here, so
  that spawned processes import nothing heavier)."""
  import time  # pylint: disable=g-import-not-at-top
  from icl_jax import lease as lease_lib  # pylint: disable=g-import-not-at-top
  barrier.wait()
  try:
    lease_lib.Lease.acquire(workdir)
    results.put('won')
    time.sleep(1)  # Hold it while the others try.
  except lease_lib.LeaseHeld:
    results.put('refused')


def snapshot(workdir):
  """{relative path: (size, mtime, sha256)} of every file, and every directory."""
  out = {}
  for root, dirs, files in os.walk(workdir):
    for name in dirs:
      out[os.path.relpath(os.path.join(root, name), workdir)] = 'dir'
    for name in files:
      path = os.path.join(root, name)
      if os.path.islink(path):  # Recorded as the link itself: it may point nowhere.
        out[os.path.relpath(path, workdir)] = ('link', os.readlink(path))
        continue
      with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      out[os.path.relpath(path, workdir)] = (os.path.getsize(path), os.stat(path).st_mtime_ns,
                                             digest)
  return out
