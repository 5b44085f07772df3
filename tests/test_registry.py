"""Stages and captioning backends are declared once (`posterlens.pipeline.STAGES`, `CAPTIONERS`): every other list
(CLI commands and summaries, report pages, the index, the import layers, the README's tables) follows.

The end-to-end test adds a throwaway stage after explain and a throwaway backend to a scratch copy of the project,
touching only two new notebooks and two cells of nbs/04b_pipeline.ipynb, then runs `posterlens run --report`."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from posterlens.cli import make_parser
from posterlens.pipeline import CAPTIONERS, STAGES
from posterlens.report import report_pages

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

ECHO = '''#| export
import io
from PIL import Image
from posterlens.caption import CaptionResult, Captioner

class EchoCaptioner(Captioner):
    "A stand-in backend: says whether the image is dark or bright, warm or cool."
    name, model, notebook = 'echo', 'echo-1', '02c_echo'
    vlm = networked = rate_limited = priced = False
    def caption(self, image, mime, prompt):
        with Image.open(io.BytesIO(image)) as im: r, g, b = [sum(c.getdata()) / 64 for c in im.convert('RGB').resize((8, 8)).split()]
        light = 'A dark poster.' if (r + g + b) / 3 < 110 else 'A bright poster.'
        return CaptionResult(f"{light} {'It looks cool.' if b > r else 'It looks warm.'}", 'ok', '', 0, 0, self.model)'''

EXTRA = '''#| export
from pathlib import Path
import pandas as pd
from posterlens.core import write_parquet

def stage_extra(factors:pd.DataFrame, # the explain stage's factors
                out:Path # the stage's folder
               ) -> pd.DataFrame:
    "How many factors push the outcome each way (a stand-in stage after explain)."
    v = factors['effect'] if 'effect' in factors else factors['mean_shap']
    res = pd.DataFrame({'direction': ['up', 'down'], 'n': [int((v > 0).sum()), int((v < 0).sum())]})
    write_parquet(res, Path(out)/'extra.parquet')
    return res'''

DECLARE_STAGE = '''    Stage(name='extra', func=stage_extra, inputs=dict(factors='explain'), outputs=('extra.parquet',),
          load=lambda d: read_parquet(d/'extra.parquet'), help='count the factors each way',
          summary=lambda r: f"extra: {int(r.n.sum())} factors counted (EXTRA-SUMMARY)", notebooks=('04c_extra',), layer=3),
]}'''


def _notebook(module, title, export, analysis):
    "A stage notebook as the project writes them: title, default_exp, exported code, `## Analysis` with parameters."
    params = new_code_cell('variant = "smoke"\noverrides = {}', metadata={'tags': ['parameters']})
    return new_notebook(cells=[new_markdown_cell(f'# {module}\n\n> {title}'), new_code_cell(f'#| default_exp {module}'),
                               new_code_cell(export), new_markdown_cell('## Analysis'), params, new_code_cell(analysis)],
                        metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})


def _declare(pipeline_nb:Path):
    "One import and one entry in the CAPTIONERS cell, one import and one `Stage(...)` in the STAGES cell."
    nb = json.loads(pipeline_nb.read_text())
    for c in nb['cells']:
        s = ''.join(c['source'])
        if s.startswith('#| export\nCAPTIONERS'):
            s = s.replace('#| export\n', '#| export\nfrom posterlens.echo import EchoCaptioner\n', 1).replace(
                ']}', '    EchoCaptioner,           # the throwaway backend\n]}', 1)
        elif '#| export' in s and 'STAGES: dict[str, Stage]' in s:
            s = s.replace('#| export\n', '#| export\nfrom posterlens.extra import stage_extra\n', 1)
            i = s.rindex(']}')
            s = s[:i] + DECLARE_STAGE + s[i + 2:]
        else: continue
        c['source'] = s.splitlines(True)
    pipeline_nb.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')


def _tracked_copy(dst:Path):
    "Copy the project's tracked and new files (as they are in the work tree, without what git ignores) into `dst`."
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split('\n')
    for f in filter(None, files):
        if not (ROOT/f).is_file(): continue
        (dst/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/f, dst/f)


def test_lists_come_from_the_declarations():
    "The CLI's commands, the report pages and the README's tables are the declared stages and backends."
    sub = next(a for a in make_parser()._actions if a.dest == 'command')
    assert [c for c in sub.choices if c in STAGES] == list(STAGES)
    pages = report_pages()
    assert all(n in pages for st in STAGES.values() for n in st.pages()) and pages[-1] == '05_report'
    assert {c.notebook for c in CAPTIONERS.values()} <= set(pages)
    r = subprocess.run([sys.executable, str(ROOT/'docs'/'readme_tables.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_extra_stage_and_backend_in_a_scratch_copy(tmp_path):
    proj = tmp_path/'proj'
    _tracked_copy(proj)
    env = {**os.environ, 'PYTHONPATH': str(proj), 'TQDM_DISABLE': '1'}
    sh = lambda *cmd, **kw: subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=1500, **kw)
    r = sh(str(BIN/'nbdev-export')); assert r.returncode == 0, r.stderr[-2000:]      # the library as the notebooks say
    before = {str(p.relative_to(proj)): p.read_bytes() for p in proj.rglob('*') if p.is_file()}
    nbformat.write(_notebook('echo', 'A throwaway captioning backend.', ECHO,
                             "import pandas as pd\nfrom posterlens.core import load_settings\nfrom posterlens.pipeline import artifact\n"
                             "cfg = load_settings(variant, overrides)\n"
                             "print('ECHO-PAGE', pd.read_parquet(artifact(cfg, 'caption', 'captions.parquet')).caption.value_counts().to_dict())"),
                   proj/'nbs'/'02c_echo.ipynb')
    nbformat.write(_notebook('extra', 'A throwaway stage after explain.', EXTRA,
                             "import pandas as pd\nfrom posterlens.core import load_settings\nfrom posterlens.pipeline import artifact\n"
                             "cfg = load_settings(variant, overrides)\n"
                             "print('EXTRA-PAGE', pd.read_parquet(artifact(cfg, 'extra', 'extra.parquet')).to_dict('records'))"),
                   proj/'nbs'/'04c_extra.ipynb')
    _declare(proj/'nbs'/'04b_pipeline.ipynb')
    r = sh(str(BIN/'nbdev-export')); assert r.returncode == 0, r.stderr[-2000:]
    r = sh(sys.executable, 'docs/readme_tables.py'); assert r.returncode == 0, r.stderr[-2000:]

    # what changed: the two new notebooks, two cells of 04b_pipeline, and what nbdev-export and the README script write
    changed = {f for f, b in before.items() if (proj/f).read_bytes() != b}
    assert changed == {'nbs/04b_pipeline.ipynb', 'posterlens/pipeline.py', 'posterlens/_modidx.py', 'README.md'}, changed
    old = [c['source'] for c in json.loads(before['nbs/04b_pipeline.ipynb'])['cells']]
    new = [c['source'] for c in json.loads((proj/'nbs'/'04b_pipeline.ipynb').read_text())['cells']]
    assert len(old) == len(new) and sum(a != b for a, b in zip(old, new)) == 2
    readme = (proj/'README.md').read_text()
    assert '| `posterlens extra` | `explain` | `extra/extra.parquet` | `04c_extra` |' in readme
    assert '| `echo` | `posterlens.echo.EchoCaptioner` | no | no | no | `02c_echo` |' in readme

    r = sh(sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_imports.py')   # layers follow
    assert r.returncode == 0, r.stdout[-3000:]
    r = sh(sys.executable, '-m', 'posterlens.cli', '--help')
    assert re.search(r'^\s+extra\s+count the factors each way', r.stdout, re.M), r.stdout

    sets = {'captioner': 'echo', 'runs_dir': f'{tmp_path}/runs', 'cache_dir': f'{tmp_path}/cache',
            'reports_dir': f'{tmp_path}/reports', 'explain_examples': 1, 'token_max_evals': 60}
    cmd = [sys.executable, '-m', 'posterlens.cli', 'run', '--variant', 'smoke', '--report']
    for k, v in sets.items(): cmd += ['--set', f'{k}={v}']
    r = sh(*cmd)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert re.search(r'^extra: \d+ factors counted \(EXTRA-SUMMARY\)$', r.stdout, re.M), r.stdout[-2000:]
    rep = tmp_path/'reports'/'smoke'
    assert 'EXTRA-PAGE' in (rep/'04c_extra.html').read_text() and 'ECHO-PAGE' in (rep/'02c_echo.html').read_text()
    assert not (rep/'02a_describe.html').exists() and not (rep/'02b_vlm.html').exists()
    index = (rep.parent/'index.html').read_text()
    assert 'href="smoke/04c_extra.html"' in index and 'href="smoke/02c_echo.html"' in index
    assert re.search(r'extra (n/a|\d+ s)', index) and '<td>echo</td>' in index
