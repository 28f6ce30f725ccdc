"""The package has no import cycles: every module can be read, imported and moved alone.

Imports are read with `ast` (module level and inside functions alike: a function-level
import that closes a cycle still ties the two modules together), the same way
../shared/tools/import_cycles.py reads them.
"""

import ast
import os

import icl_jax

PACKAGE_DIR = os.path.dirname(os.path.abspath(icl_jax.__file__))


def module_files(package_dir: str) -> dict[str, str]:
  """{'icl_jax.tasks.gp': path, 'icl_jax.tasks': path of its __init__.py, ...}."""
  parent = os.path.dirname(package_dir)
  out = {}
  for folder, _, names in os.walk(package_dir):
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, parent)[:-3].replace(os.sep, '.')
        out[dotted.removesuffix('.__init__')] = path
  return out


def import_edges(modules: dict[str, str]) -> dict[str, set[str]]:
  """Module -> the package modules it imports (a parent package's own __init__ excluded:
  importing a submodule runs it, but it cannot close a cycle with its own children)."""
  edges = {m: set() for m in modules}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          parts = module.split('.')
          keep = len(parts) - node.level + (1 if path.endswith('__init__.py') else 0)
          base = '.'.join(parts[:keep] + ([base] if base else []))
        names = [base] + [f'{base}.{a.name}' for a in node.names]
      else:
        continue
      for name in names:
        while name and name not in modules:  # `from pkg.mod import fn` -> pkg.mod.
          name = name.rpartition('.')[0]
        if name and name != module and not module.startswith(name + '.'):
          edges[module].add(name)
  return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def test_the_package_has_no_import_cycle():
  modules = module_files(PACKAGE_DIR)
  assert 'icl_jax.workload' in modules and 'icl_jax.tasks.families' in modules
  assert cycles(import_edges(modules)) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
  package = tmp_path / 'pkg'
  (package / 'sub').mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'a.py').write_text('from pkg import b\n')
  (package / 'b.py').write_text('def f():\n  from pkg.sub.c import g\n')
  (package / 'sub' / '__init__.py').write_text('from pkg.sub.c import g\n')
  (package / 'sub' / 'c.py').write_text('from . import d\nfrom ..a import x\n')
  (package / 'sub' / 'd.py').write_text('import os\n')
  found = cycles(import_edges(module_files(str(package))))
  assert found == [['pkg.a', 'pkg.b', 'pkg.sub.c']]
