"""The how-to guides of the documentation site (docs/howto/*.md) run as written.

Every ```sh block of a guide is run, in order, by bash in a project of its own (a copy of settings.ini and prompts/,
and nbs/) against the local fakes: Gemini (tests/fake_gemini.py with countTokens: fake_vertex.py, through the SDK's own
GOOGLE_GEMINI_BASE_URL) and an OpenAI-compatible server (tests/fake_openai.py, through OPENAI_BASE_URL). What a
reader brings is prepared here the way the guide says to: their CSV and images under data/ads/, their API key in
the environment. ```console blocks (installing, credentials, servers that need a GPU) are shown, not run."""
import os, re, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
HOWTO = ROOT/'docs'/'howto'
sys.path.insert(0, str(Path(__file__).parent))
from fake_vertex import FakeVertex as FakeGemini   # noqa: E402  (FakeGemini + countTokens, as the real API serves)
from fake_openai import FakeOpenAI     # noqa: E402

pytestmark = pytest.mark.xdist_group('howto')   # one worker builds this module's fixtures once

KEY = 'AIza-howto-test-key'
_re_sh = re.compile(r'^```sh\n(.*?)^```', re.M | re.S)

def sh_blocks(page:Path) -> list[str]:
    "The ```sh blocks of a guide, in order."
    return _re_sh.findall(page.read_text())

def test_every_guide_has_commands_to_run():
    pages = sorted(HOWTO.glob('*.md'))
    assert {p.stem for p in pages} >= {'gemini', 'local-vlm', 'prompts'}
    for p in pages: assert sh_blocks(p), p.name

def reader_data(d:Path, n=24):
    "What a reader brings: a CSV of ad creatives with a click-through rate, and the images it names."
    rng = np.random.default_rng(0)
    (d/'images').mkdir(parents=True)
    rows = []
    for i in range(n):
        dark = i % 2 == 0
        im = Image.new('RGB', (64, 96), (20, 25, 40) if dark else (230, 225, 210))
        ImageDraw.Draw(im).rectangle([8, 60 + i % 5, 56, 90], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        name = f'a{i:03d}.{"png" if i % 3 else "jpg"}'
        im.save(d/'images'/name)
        rows.append({'ad_id': f'a{i:03d}', 'creative': f'images/{name}', 'ctr': round(0.02 + 0.01 * dark + rng.normal(0, 0.004), 4)})
    pd.DataFrame(rows).to_csv(d/'ads.csv', index=False)

def run_blocks(page:Path, cwd:Path, env:dict) -> list[subprocess.CompletedProcess]:
    "Run each ```sh block of `page` with bash in `cwd`; stop at the first that fails."
    out = []
    for b in sh_blocks(page):
        r = subprocess.run(['bash', '-euo', 'pipefail', '-c', b], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
        out.append(r)
        assert r.returncode == 0, f'{page.name}: this block failed ({r.returncode}):\n{b}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}'
    return out

@pytest.fixture(scope='session')
def project(tmp_path_factory):
    "A project as a reader of the guides has it: the clone's settings.ini and prompts/, the notebooks, their data."
    d = tmp_path_factory.mktemp('howto')/'posterlens'
    d.mkdir()
    shutil.copy(ROOT/'settings.ini', d/'settings.ini')
    shutil.copytree(ROOT/'prompts', d/'prompts')
    shutil.copytree(ROOT/'nbs', d/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))   # the reports run them here
    reader_data(d/'data'/'ads')
    return d

@pytest.fixture(scope='session')
def fakes():
    with FakeGemini(api_keys=[KEY]) as g, FakeOpenAI() as o: yield g, o

@pytest.fixture(scope='session')
def env(fakes):
    g, o = fakes
    e = {k: v for k, v in os.environ.items() if not re.match(r'^(GEMINI|GOOGLE|OPENAI)_', k)}
    bin_dir = str(Path(sys.executable).parent)
    return {**e, 'PATH': bin_dir + os.pathsep + e.get('PATH', ''), 'GEMINI_API_KEY': KEY,
            'GOOGLE_GEMINI_BASE_URL': g.url, 'OPENAI_BASE_URL': o.url + '/v1',
            'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TQDM_DISABLE': '1'}

@pytest.fixture(scope='session')
def gemini_run(project, env, fakes):
    return run_blocks(HOWTO/'gemini.md', project, env)

def test_gemini_guide(gemini_run, project, fakes):
    g, _ = fakes
    data, estimate, run = gemini_run
    assert '24' in data.stdout + data.stderr                                   # the rows it found usable
    assert 'USD' in estimate.stdout and 'caption estimate' in estimate.stdout    # the cost, before paying
    assert len(g.ok_by_image) == 24 and max(g.ok_by_image.values()) == 1        # every image described once
    assert 'ads-try/03_model.html' in (project/'reports'/'index.html').read_text()      # the index lists the report
    assert re.search(r'(BEATS|does NOT beat) the mean predictor', (project/'reports'/'ads-try'/'03_model.html').read_text())

def test_local_vlm_guide(gemini_run, project, env, fakes):
    _, o = fakes
    run_blocks(HOWTO/'local-vlm.md', project, env)
    assert len(o.ok_by_image) == 24                                             # the OpenAI-compatible server described them
    caps = pd.read_parquet(project/'runs'/'ads-local'/'caption'/'captions.parquet')
    assert len(caps) == 24

def test_prompts_guide(gemini_run, project, env, fakes):
    g, _ = fakes
    before = len(g.requests)
    run_blocks(HOWTO/'prompts.md', project, env)
    assert len(g.requests) - before >= 24                                       # the new prompt's descriptions, paid once
    assert (project/'runs'/'ads-mood'/'model'/'metrics.json').exists()
    assert 'mood of this advertisement' in ' '.join(p.get('text', '') for b in g.bodies[-3:] for p in b['contents'][0]['parts'])
