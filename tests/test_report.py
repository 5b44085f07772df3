"Reports: the index compares variants side by side, secrets and home paths never reach a report, and pages load nothing from the network."
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from posterlens.core import load_settings, run_dir, write_json
from posterlens.report import (digest, external_refs, report_dir, run_notebooks, scrub, write_index, report_all,
                               PosterlensError)

FAKE_GOOGLE = 'AIza' + 'SyD' + '0123456789abcdefghijklmnopqrstuv'
FAKE_OAUTH = 'ya29.' + 'A0ARrdaM' + '-' + 'q' * 40
FAKE_OPENAI = 'sk-' + 'proj-' + 'AbCdEf0123456789' * 2


def standin_run(cfg, model_rmse, beats, factors):
    "Artifacts of a finished run, as the stages would have written them."
    R = run_dir(cfg)
    write_json({'n': 30, 'target_std': 0.9, 'folds_run': [0, 1],
                'model': {'rmse': model_rmse, 'ci': [model_rmse - 0.05, model_rmse + 0.05], 'per_fold': [model_rmse] * 2},
                'mean': {'rmse': 0.91, 'ci': [0.85, 0.97], 'per_fold': [0.91] * 2},
                'tfidf': {'rmse': 0.77, 'ci': [0.70, 0.84], 'per_fold': [0.77] * 2},
                'beats_mean': beats, 'seconds': 12.0}, R/'model'/'metrics.json')
    (R/'explain').mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{'factor': f, 'n': 10, 'prevalence': 0.3, 'mean_shap': s, 'ci_lo': s - 0.05, 'ci_hi': s + 0.05,
                   'direction': 'up' if s > 0 else 'down', 'significant': beats} for f, s in factors.items()]
                 ).to_parquet(R/'explain'/'factors.parquet')
    (R/'caption').mkdir(parents=True, exist_ok=True)
    pd.DataFrame({'id': ['a', 'b', 'c'], 'caption': ['The image is dark.', 'It is busy and cluttered here.', ''],
                  'status': ['ok', 'ok', 'failed'], 'reason': ['', '', 'timeout']}).to_parquet(R/'caption'/'captions.parquet')
    write_json({'estimated_cost_usd': 0.0}, R/'caption'/'usage.json')
    write_json(digest(cfg), report_dir(cfg)/'digest.json')


def test_index_compares_two_variants(tmp_path):
    o = {'runs_dir': str(tmp_path/'runs'), 'reports_dir': str(tmp_path/'reports')}
    standin_run(load_settings('smoke', o), 0.48, True, {'dark and low-key': 0.31, 'cluttered': -0.42, 'black and white': 0.2})
    standin_run(load_settings('default', o), 0.93, False, {'warm red': -0.05, 'bright': -0.3})
    page = write_index(tmp_path/'reports').read_text()
    assert re.findall(r'<th scope="col">([\w-]+)</th>', page) == ['default', 'smoke']
    row = lambda label: re.search(rf'<tr><th scope="row">{re.escape(label)}</th>(.*?)</tr>', page).group(1)
    cells = lambda label: re.findall(r'<td>(.*?)</td>', row(label))
    model = cells('CV RMSE: model [95% CI]')
    assert [re.sub('<[^>]+>', '', c) for c in model] == ['0.930 [0.880, 0.980]', '0.480 [0.430, 0.530]']
    assert all('0.910 [0.850, 0.970]' in c for c in cells('CV RMSE: mean predictor'))
    assert all('0.770' in c for c in cells('CV RMSE: TF-IDF + ridge'))
    beats = cells('Beats the mean predictor?')
    assert beats[0].startswith('<span class="no">No</span>') and beats[1].startswith('<span class="yes">Yes</span>')
    flagged = cells('Flagged factors')
    assert 'dark and low-key (+0.31' in flagged[1] and 'cluttered (-0.42' in flagged[1]
    assert flagged[1].index('dark and low-key') < flagged[1].index('<b>down</b>') < flagged[1].index('cluttered')
    assert 'bright' not in flagged[0] and 'the model does not beat the mean' in flagged[0]   # nothing listed, and why
    assert cells('Captions by status') == ['1 failed, 2 ok'] * 2
    assert cells('Mean caption length') == ['5.0 words'] * 2
    assert str(tmp_path) not in page


def test_skipped_variant_is_listed_not_a_crash(tmp_path):
    o = {'runs_dir': str(tmp_path/'runs'), 'reports_dir': str(tmp_path/'reports')}
    res = report_all(['imdb-bert'], {**o, 'dataset': 'data/no-such-file.csv'}, progress=False)
    assert res == {'imdb-bert': 'skipped: dataset data/no-such-file.csv not found (see README for how to get it)'}
    page = (tmp_path/'reports'/'index.html').read_text()
    assert '>imdb-bert</th>' in page and 'skipped: dataset data/no-such-file.csv not found' in page


def test_scrub_removes_keys_and_home_paths():
    home = str(Path.home())
    text = f'key={FAKE_GOOGLE} token {FAKE_OAUTH} openai {FAKE_OPENAI} file {home}/data/x.csv root /srv/proj/runs'
    out = scrub(text, root='/srv/proj')
    for secret in (FAKE_GOOGLE, FAKE_OAUTH, FAKE_OPENAI, home + '/'):
        assert secret not in out
    assert out == 'key=<redacted> token <redacted> openai <redacted> file ~/data/x.csv root <project>/runs'


def test_executed_report_is_scrubbed_and_offline(tmp_path, monkeypatch):
    "A notebook that prints secrets and paths, plots with matplotlib and shows a SHAP text plot becomes a clean offline page."
    monkeypatch.setenv('POSTERLENS_FAKE_TOKEN', 'env-secret-value-123')
    nb = new_notebook(cells=[
        new_markdown_cell('# Stand-in report'), new_code_cell('#| default_exp core'), new_markdown_cell('## Analysis'),
        new_code_cell('variant = "smoke"\noverrides = {}', metadata={'tags': ['parameters']}),
        new_code_cell(f'import os, pathlib\nprint("{FAKE_GOOGLE}", "{FAKE_OPENAI}", os.environ["POSTERLENS_FAKE_TOKEN"])\n'
                      'print(pathlib.Path.home()/"secret"/"data.csv")'),
        new_code_cell('import matplotlib\nmatplotlib.use("agg")\nimport matplotlib.pyplot as plt\n%matplotlib inline\n'
                      'plt.plot([1, 2, 3]); plt.show()'),
        new_code_cell('import numpy as np, shap\nshap.plots.text(shap.Explanation(values=np.array([0.4, -0.3, 0.1]), '
                      'base_values=6.0, data=np.array(["The image is dark. ", "It is busy. ", "Large bold text."])))')])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    (tmp_path/'src').mkdir()
    nbformat.write(nb, tmp_path/'src'/'09_standin.ipynb')
    cfg = load_settings('smoke', {'runs_dir': str(tmp_path/'runs')})
    [page_path] = run_notebooks(cfg, [tmp_path/'src'/'09_standin.ipynb'], out=tmp_path/'rep', progress=False)
    page = page_path.read_text()
    executed = (tmp_path/'rep'/'09_standin.ipynb').read_text()
    for text in (page, executed):
        for secret in (FAKE_GOOGLE, FAKE_OPENAI, 'env-secret-value-123', str(Path.home()) + '/secret'):
            assert secret not in text
    assert '~/secret/data.csv' in page
    assert 'data:image/png;base64,' in page                        # the matplotlib figure is embedded
    assert 'The image is dark.' in page and '<svg' in page          # the SHAP text plot is inline
    assert external_refs(page) == []
    assert not re.search(r'<(script|link)\b[^>]*(src|href)=["\']?https?:', page, re.I)
    assert '## Run record' in executed and 'Run record' in page
    assert 'IProgress' not in page                                  # tqdm's ipywidgets warning is silenced


def test_failing_notebook_keeps_its_report(tmp_path):
    nb = new_notebook(cells=[new_code_cell('#| default_exp core'), new_markdown_cell('## Analysis'), new_code_cell('x = 1'),
                             new_code_cell('raise KeyError("no column named rating")')])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, tmp_path/'08_bad.ipynb')
    source = (tmp_path/'08_bad.ipynb').read_text()
    cfg = load_settings('smoke', {'runs_dir': str(tmp_path/'runs')})
    with pytest.raises(PosterlensError) as e:
        run_notebooks(cfg, [tmp_path/'08_bad.ipynb'], out=tmp_path/'rep', progress=False)
    msg = str(e.value)
    assert '\n' not in msg and '08_bad.ipynb' in msg and "KeyError: 'no column named rating'" in msg
    assert (tmp_path/'rep'/'08_bad.html').exists() and (tmp_path/'rep'/'08_bad.ipynb').exists()
    assert (tmp_path/'08_bad.ipynb').read_text() == source      # the source notebook is never written
