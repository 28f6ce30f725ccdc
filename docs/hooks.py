"""MkDocs hooks: the parts of the site generated from the code, so they cannot go stale.

  <!-- schema -->            the config reference: icl_jax/schema.py's table of fields
  <!-- include: PATH -->     a Markdown file of the repository (launch/README.md), its
                             headings one level down and its links to other files kept as
                             code, since they lie outside the site
  <!-- notebook: PATH -->    a notebook's Markdown and code cells, in order
"""

from __future__ import annotations

import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def schema_table() -> str:
  from icl_jax import schema  # pylint: disable=g-import-not-at-top
  return schema.markdown_table()


def include(path: str) -> str:
  with open(os.path.join(REPO, path)) as f:
    text = f.read()
  text = re.sub(r'^(#+) ', r'#\1 ', text, flags=re.M)
  # Links to files of the repository are not pages of the site: keep their text.
  return re.sub(r'\[([^\]]+)\]\((?!https?://)[^)]+\)', r'`\1`', text)


def notebook(path: str) -> str:
  with open(os.path.join(REPO, path)) as f:
    cells = json.load(f)['cells']
  out = []
  for cell in cells:
    source = ''.join(cell['source'])
    out.append(source if cell['cell_type'] == 'markdown' else f'```python\n{source}\n```')
  return '\n\n'.join(out)


def render(markdown: str) -> str:
  markdown = markdown.replace('<!-- schema -->', schema_table())
  markdown = re.sub(r'<!-- include: (\S+) -->', lambda m: include(m.group(1)), markdown)
  return re.sub(r'<!-- notebook: (\S+) -->', lambda m: notebook(m.group(1)), markdown)


def on_page_markdown(markdown, page, config, files):  # pylint: disable=unused-argument
  return render(markdown)
