"""A real SLURM cluster on this host, for the tests marked `slurm` (tests/test_slurm_cluster.py).

Debian's packages (`apt-get install -y slurmctld slurmd slurm-client munge`; .ci/run installs
them) started without systemd, everything under one temporary directory:
  - munged as user munge, on a socket of its own (another munged on this host is left alone);
  - slurmctld, and one slurmd per node, each node with `gpus` fake GPUs: SLURM 22.05 refuses
    GPUs declared by count only, so each one is a character device (`mknod PATH c 1 3`, the
    same numbers as /dev/null) named by gres.conf;
  - no cgroups (proctrack/linuxproc, task/none), select/cons_tres with CR_Core, SlurmUser root;
  - final job states in a text file (jobcomp/filetxt), since sacct needs slurmdbd and a database.
The nodes share the address 127.0.0.1 on distinct ports. Their names must resolve, since JAX's
coordinator is the first node of a step's node list: the slurmd daemons (and so every job step)
run in a mount namespace whose /etc/hosts names them, so the host's own file is never touched.
`stop` ends the daemons by the pids they wrote.

Run it alone to get a cluster to try things on: `python tests/slurm_cluster.py DIR` (Ctrl-C stops).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'squeue', 'scontrol', 'scancel', 'sinfo', 'srun')
PARTITION = 'debug'
# SLURM's words for a job that still holds, or waits for, an allocation.
ACTIVE_STATES = ('PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'REQUEUED', 'REQUEUE_HOLD',
                 'REQUEUE_FED', 'RESIZING', 'SUSPENDED', 'STOPPED', 'SIGNALING', 'STAGE_OUT')


def missing() -> list[str]:
  """The programs this host lacks to run a cluster (empty: it can)."""
  found = [shutil.which(p) or shutil.which(p, path='/usr/sbin:/sbin') for p in DAEMONS + CLIENTS]
  absent = [p for p, f in zip(DAEMONS + CLIENTS, found) if f is None]
  if not absent and os.geteuid() != 0:
    absent.append('root (the daemons run as root and munge)')
  return absent


def why_not() -> str | None:
  """Why no cluster can run here (the tests' one skip reason), or None."""
  absent = missing()
  if not absent:
    return None
  return (f'SLURM cannot run here: {", ".join(absent)} missing (.ci/run installs it: '
          f'apt-get install -y slurmctld slurmd slurm-client munge)')


def _free_ports(n: int) -> list[int]:
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _sbin(name: str) -> str:
  return shutil.which(name) or shutil.which(name, path='/usr/sbin:/sbin') or name


class Cluster:
  """munged, slurmctld and `nodes` slurmd, each node with `cpus` CPUs and `gpus` fake GPUs."""

  def __init__(self, directory: str, nodes: int = 2, cpus: int = 8, gpus: int = 2):
    self.dir = os.path.abspath(directory)
    suffix = os.urandom(3).hex()  # Two sessions on one host never share a node name.
    self.nodes = [f'icl-{suffix}-{chr(ord("a") + i)}' for i in range(nodes)]
    self.cpus, self.gpus = cpus, gpus
    self.conf = os.path.join(self.dir, 'slurm.conf')
    self.jobcomp = os.path.join(self.dir, 'jobcomp.txt')
    self.munge_socket = os.path.join(self.dir, 'munge', 'munge.socket')
    self.env = dict(os.environ, SLURM_CONF=self.conf)
    self._pid_files: list[str] = []

  # -------------------------------------------------------------------------------------
  # Up and down
  # -------------------------------------------------------------------------------------
  def start(self, timeout_s: float = 60.0) -> None:
    for sub in ('state', 'log', 'run', 'dev', 'munge') + tuple(f'spool/{n}' for n in self.nodes):
      os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
    self._start_munge()
    self._write_config()
    try:
      self._daemon([_sbin('slurmctld'), '-f', self.conf], 'slurmctld.pid')
      hosts = os.path.join(self.dir, 'hosts')
      with open('/etc/hosts') as f, open(hosts, 'w') as out:
        out.write(f.read().rstrip('\n') + f'\n127.0.0.1 {" ".join(self.nodes)}\n')
      for node in self.nodes:
        slurmd = f'exec {_sbin("slurmd")} -f {self.conf} -N {node}'
        self._daemon(['unshare', '--mount', 'sh', '-c',
                      f'mount --bind {hosts} /etc/hosts && {slurmd}'], f'slurmd-{node}.pid')
      self._wait_idle(timeout_s)
    except BaseException:
      self.stop()
      raise

  def _start_munge(self) -> None:
    munge_dir = os.path.dirname(self.munge_socket)
    user = pwd.getpwnam('munge')
    os.chown(munge_dir, user.pw_uid, grp.getgrnam('munge').gr_gid)
    os.chmod(munge_dir, 0o755)  # munged wants its socket reachable by all.
    pid_file = os.path.join(munge_dir, 'munged.pid')
    self._pid_files.append(pid_file)
    subprocess.run(
        ['runuser', '-u', 'munge', '--', _sbin('munged'), f'--socket={self.munge_socket}',
         f'--pid-file={pid_file}', f'--log-file={os.path.join(munge_dir, "munged.log")}',
         f'--seed-file={os.path.join(munge_dir, "munged.seed")}'],
        check=True, capture_output=True, timeout=30)

  def _write_config(self) -> None:
    ports = _free_ports(1 + len(self.nodes))
    d = self.dir
    lines = [
        'ClusterName=icltest', f'SlurmctldHost={socket.gethostname()}(127.0.0.1)',
        f'SlurmctldPort={ports[0]}', 'SlurmUser=root', 'SlurmdUser=root',
        'AuthType=auth/munge', 'CredType=cred/munge', f'AuthInfo=socket={self.munge_socket}',
        f'StateSaveLocation={d}/state', f'SlurmdSpoolDir={d}/spool/%n',
        f'SlurmctldPidFile={d}/run/slurmctld.pid', f'SlurmdPidFile={d}/run/slurmd-%n.pid',
        f'SlurmctldLogFile={d}/log/slurmctld.log', f'SlurmdLogFile={d}/log/slurmd-%n.log',
        'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none', 'MpiDefault=none',
        'SelectType=select/cons_tres', 'SelectTypeParameters=CR_Core',
        'SchedulerType=sched/backfill', 'SchedulerParameters=sched_interval=2',
        'GresTypes=gpu', 'ReturnToService=2', 'SlurmdParameters=config_overrides',
        'JobCompType=jobcomp/filetxt', f'JobCompLoc={self.jobcomp}',
        'AccountingStorageType=accounting_storage/none', 'JobAcctGatherType=jobacct_gather/none',
        'SlurmctldTimeout=30', 'SlurmdTimeout=60', 'InactiveLimit=0', 'KillWait=30',
        'MinJobAge=300', 'SlurmctldDebug=info', 'SlurmdDebug=info',
    ]
    for node, port in zip(self.nodes, ports[1:]):
      lines.append(f'NodeName={node} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} '
                   f'Port={port} CPUs={self.cpus} RealMemory=4096 Gres=gpu:{self.gpus} '
                   f'State=UNKNOWN')
    lines.append(f'PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP')
    with open(self.conf, 'w') as f:
      f.write('\n'.join(lines) + '\n')
    gres = []
    for node in self.nodes:
      for g in range(self.gpus):
        device = os.path.join(d, 'dev', f'{node}-gpu{g}')
        if not os.path.exists(device):
          os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # A char device, like /dev/null.
        gres.append(f'NodeName={node} Name=gpu File={device}')
    with open(os.path.join(d, 'gres.conf'), 'w') as f:
      f.write('\n'.join(gres) + '\n')

  def _daemon(self, command: list[str], pid_name: str) -> None:
    """Starts a daemon (it forks itself away) and remembers its pid file."""
    self._pid_files.append(os.path.join(self.dir, 'run', pid_name))
    subprocess.run(command, check=True, env=self.env, capture_output=True, timeout=60)

  def _wait_idle(self, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
      out = self.run(['sinfo', '-h', '-N', '-o', '%N %t'], check=False)
      states = dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)
      if len(states) == len(self.nodes) and all(s == 'idle' for s in states.values()):
        return
      if time.monotonic() > deadline:
        raise RuntimeError(f'SLURM nodes not idle after {timeout_s:.0f} s: {states or out.stderr}'
                           f'\n{self.logs()}')
      time.sleep(0.3)

  def stop(self) -> None:
    """Ends the daemons this cluster started (by their pid files), newest first."""
    for pid_file in reversed(self._pid_files):
      pid = _read_pid(pid_file)
      if pid is None:
        continue
      try:
        os.kill(pid, signal.SIGTERM)
      except ProcessLookupError:
        continue
      deadline = time.monotonic() + 15
      while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
      if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    self._pid_files.clear()

  # -------------------------------------------------------------------------------------
  # Asking it things
  # -------------------------------------------------------------------------------------
  def run(self, command: list[str], check: bool = True, timeout: float = 60
          ) -> subprocess.CompletedProcess:
    out = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode:
      raise RuntimeError(f'{" ".join(command)} failed ({out.returncode}): {out.stderr}')
    return out

  def queue(self, job: str) -> dict[str, tuple[str, str]]:
    """{array task or job id: (state, reason)} of `job`'s entries still in the queue."""
    out = self.run(['squeue', '-h', '-r', '-j', job, '-o', '%i %T %r'], check=False)
    return {f[0]: (f[1], f[2]) for line in out.stdout.splitlines() if len(f := line.split()) >= 3}

  def final_states(self, job: str) -> dict[str, str]:
    """{job id: state} of `job`'s finished runs, from the jobcomp file, in order (an array
    task requeued twice appears once per run; the last one counts)."""
    states = {}
    try:
      with open(self.jobcomp) as f:
        records = [dict(kv.split('=', 1) for kv in line.split() if '=' in kv) for line in f]
    except FileNotFoundError:
      return {}
    for r in records:
      if r.get('JobId') == job or r.get('ArrayJobId') == job:
        task = r.get('ArrayTaskId')
        key = f'{job}_{task}' if task not in (None, '4294967294') else r['JobId']
        states.setdefault(key, [])
        states[key].append(r.get('JobState'))
    return states

  def wait_done(self, job: str, timeout_s: float) -> dict[str, list[str]]:
    """Waits until nothing of `job` is queued; returns its final states."""
    deadline = time.monotonic() + timeout_s
    while self.queue(job):
      if time.monotonic() > deadline:
        raise TimeoutError(f'job {job} still queued after {timeout_s:.0f} s: {self.queue(job)}')
      time.sleep(0.5)
    return self.final_states(job)

  def logs(self) -> str:
    text = []
    for name in sorted(os.listdir(os.path.join(self.dir, 'log'))):
      with open(os.path.join(self.dir, 'log', name), errors='replace') as f:
        text.append(f'--- {name}\n' + ''.join(f.readlines()[-30:]))
    return '\n'.join(text)


def _read_pid(path: str) -> int | None:
  try:
    with open(path) as f:
      return int(f.read().strip())
  except (OSError, ValueError):
    return None


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  try:  # A zombie is gone for our purpose.
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return False
  return True


if __name__ == '__main__':
  cluster = Cluster(sys.argv[1])
  cluster.start()
  print(f'export SLURM_CONF={cluster.conf}  # nodes: {", ".join(cluster.nodes)}; Ctrl-C stops')
  try:
    signal.pause()
  except KeyboardInterrupt:
    pass
  finally:
    cluster.stop()
