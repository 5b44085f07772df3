"The `posterlens` command run as a real subprocess: one-line errors for bad input, work already done kept."
import re, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, tmp, quiet=True, timeout=600):
    "Run `posterlens ARGS` with runs and caches under `tmp`; (exit code, stdout, stderr)."
    cmd = [sys.executable, '-m', 'posterlens.cli', *args, '--set', f'runs_dir={tmp}/runs', '--set', f'cache_dir={tmp}/cache']
    if quiet: cmd.append('-q')
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def poster(path, colour):
    Image.new('RGB', (40, 60), colour).save(path)
    return path.name


def write_csv(tmp, rows, name='posters.csv'):
    p = tmp/name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def good_rows(tmp, n=4):
    cols = ['red', 'green', 'blue', 'black', 'white', 'navy']
    return [{'image': poster(tmp/f'p{i}.png', cols[i % len(cols)]), 'target': 5.0 + i} for i in range(n)]


def assert_one_line_error(rc, err, *words):
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('posterlens: error: '), lines[0]
    for w in words: assert w in lines[0], (w, lines[0])


def data_dir(tmp, variant='smoke'): return tmp/'runs'/variant/'data'


def test_missing_csv(tmp_path):
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={tmp_path}/nope.csv', tmp=tmp_path)
    assert_one_line_error(rc, err, 'not found', 'nope.csv')


def test_missing_columns(tmp_path):
    csv = write_csv(tmp_path, [{'img': r['image'], 'rating': r['target']} for r in good_rows(tmp_path)])
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert_one_line_error(rc, err, 'missing column', "'image'", "'target'")


def test_empty_data_set(tmp_path):
    csv = tmp_path/'empty.csv'
    csv.write_text('image,target\n')
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert_one_line_error(rc, err, 'empty')
    csv.write_text('')
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert_one_line_error(rc, err, 'empty')


def test_non_numeric_targets(tmp_path):
    rows = good_rows(tmp_path)
    csv = write_csv(tmp_path, [{**r, 'target': 'great'} for r in rows])
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert_one_line_error(rc, err, 'target', 'numeric')
    # a few non-numeric targets among good ones: those rows are skipped and listed, the rest is kept
    csv = write_csv(tmp_path, [{**r, 'target': 'n/a' if i == 1 else r['target']} for i, r in enumerate(rows)])
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert rc == 0, err
    assert len(pd.read_parquet(data_dir(tmp_path)/'table.parquet')) == 3
    assert pd.read_parquet(data_dir(tmp_path)/'skipped.parquet').reason.tolist() == ['non-numeric target']


def test_corrupt_and_non_image_files(tmp_path):
    rows = good_rows(tmp_path, 3)
    (tmp_path/'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated jpeg')
    (tmp_path/'notes.png').write_text('this is text, not an image')
    bad = [{'image': 'broken.jpg', 'target': 4.0}, {'image': 'notes.png', 'target': 3.0}]
    # only bad files: nothing usable, one line naming why
    csv = write_csv(tmp_path, bad, 'bad.csv')
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert_one_line_error(rc, err, 'no usable rows', 'unreadable image')
    # mixed: the good rows are kept, the bad ones listed with their reason
    csv = write_csv(tmp_path, rows + bad, 'mixed.csv')
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert rc == 0, err
    assert len(pd.read_parquet(data_dir(tmp_path)/'table.parquet')) == 3
    sk = pd.read_parquet(data_dir(tmp_path)/'skipped.parquet')
    assert sk.reason.tolist() == ['unreadable image'] * 2 and sk.image.tolist() == ['broken.jpg', 'notes.png']


def test_failed_rerun_keeps_earlier_artifacts(tmp_path):
    "A later bad input fails with one line and leaves the artifacts of the earlier good run in place."
    csv = write_csv(tmp_path, good_rows(tmp_path))
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert rc == 0, err
    table = data_dir(tmp_path)/'table.parquet'
    before = table.read_bytes()
    csv.write_text('image,target\np0.png,oops\n')
    rc, out, err = cli('data', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path, quiet=False)
    assert rc == 2 and 'Traceback' not in err
    assert err.splitlines()[-1].startswith('posterlens: error: ')
    assert table.read_bytes() == before


def test_usage_errors(tmp_path):
    rc, out, err = cli('data', '--variant', 'no-such-variant', tmp=tmp_path)
    assert_one_line_error(rc, err, 'unknown variant')
    rc, out, err = cli('train', '--variant', 'smoke', '--set', 'epochs', tmp=tmp_path)
    assert_one_line_error(rc, err, 'key=value')
    r = subprocess.run([sys.executable, '-m', 'posterlens.cli', 'frobnicate'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and 'invalid choice' in r.stderr
    for c in ('synth', 'data', 'caption', 'train', 'explain', 'report', 'run'):
        r = subprocess.run([sys.executable, '-m', 'posterlens.cli', c, '--help'], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0 and r.stdout.startswith(f'usage: posterlens {c}'), r.stderr


def test_synth(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'posterlens.cli', 'synth', str(tmp_path/'s'), '--n', '6', '--seed', '1', '-q'],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    csv = tmp_path/'s'/'posters.csv'
    assert r.stdout.strip() == f'synthetic data: {csv}'
    df = pd.read_csv(csv)
    assert len(df) == 6 and {'id', 'image', 'target'} <= set(df.columns)
    assert all((csv.parent/p).exists() for p in df.image)
    (tmp_path/'afile').write_text('a file, not a folder')
    r = subprocess.run([sys.executable, '-m', 'posterlens.cli', 'synth', str(tmp_path/'afile'/'x'), '--n', '2'],
                       capture_output=True, text=True, cwd=ROOT)
    assert_one_line_error(r.returncode, r.stderr, 'cannot write synthetic data', 'afile')


def snapshot(folder):
    "Every file under `folder` with its bytes."
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob('*')) if p.is_file()}


def test_failed_caption_run_keeps_caches_and_captions(tmp_path):
    "Captions made before a bad input stay: the caption cache and the finished stage's artifacts are not touched."
    csv = write_csv(tmp_path, good_rows(tmp_path, 3))
    rc, out, err = cli('caption', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert rc == 0, err
    caps = tmp_path/'runs'/'smoke'/'caption'/'captions.parquet'
    assert len(pd.read_parquet(caps)) == 3
    cache, before = snapshot(tmp_path/'cache'), caps.read_bytes()
    assert cache                                             # the captions were cached
    csv.write_text('picture,target\np0.png,5\n')              # the image column is gone
    rc, out, err = cli('caption', '--variant', 'smoke', '--set', f'dataset={csv}', tmp=tmp_path)
    assert_one_line_error(rc, err, "missing column(s) 'image'")
    assert snapshot(tmp_path/'cache') == cache and caps.read_bytes() == before


@pytest.mark.slow
def test_run_smoke_with_reports(tmp_path):
    "`posterlens run --variant smoke --report`: every stage, the notebook reports and the index, nothing written to nbs/."
    nbs_before = snapshot(ROOT/'nbs')
    rc, out, err = cli('run', '--variant', 'smoke', '--report', '--set', f'reports_dir={tmp_path}/reports', tmp=tmp_path,
                       timeout=1800)
    assert rc == 0, err[-4000:]
    rep = tmp_path/'reports'
    assert f'index: {rep}/index.html' in out
    for n in ('01_data', '02_caption', '03_model', '04_explain', '04c_verify', '05_report'):
        assert (rep/'smoke'/f'{n}.html').stat().st_size > 10_000 and (rep/'smoke'/f'{n}.ipynb').exists()
    assert 'set verifier = gemini' in (rep/'smoke'/'04c_verify.html').read_text()   # no VLM: the page says what to set
    assert not (rep/'smoke'/'02b_vlm.html').exists() and (rep/'smoke'/'02a_describe.html').exists()   # the describer's own notebook
    index = (rep/'index.html').read_text()
    for row in ('CV RMSE: model [95% CI]', 'CV RMSE: mean predictor', 'CV RMSE: TF-IDF + ridge',
                'Beats the mean predictor?', 'Verified on the images', 'Flagged factors'):
        assert f'<th scope="row">{row}</th>' in index, row
    assert 'href="smoke/05_report.html"' in index
    summary = (rep/'smoke'/'05_report.html').read_text()
    for text in ('mean predictor', 'TF-IDF + ridge', 'CI low', 'Beats the mean predictor?',   # the RMSE table
                 'mean_shap', 'prevalence', 'significant',                                    # the factor table
                 'data:image/jpeg;base64,', 'data:image/png;base64,', 'Run record'):
        assert text in summary, text
    for page in [index] + [p.read_text() for p in (rep/'smoke').glob('*.html')]:
        assert not re.search(r'<(script|link)\b[^>]*(src|href)=["\']?https?:', page, re.I)
    assert (tmp_path/'runs'/'smoke'/'report.json').exists()
    assert snapshot(ROOT/'nbs') == nbs_before


def test_ctrl_c_keeps_finished_work(tmp_path):
    "Ctrl-C: exit status 130, one line on stderr, the posters drawn so far stay (and no half-written CSV)."
    import signal, time
    out = tmp_path/'s'
    # a run started in the background (`cmd &` in a script) inherits SIGINT ignored: the child gets it back, as in a terminal
    p = subprocess.Popen([sys.executable, '-m', 'posterlens.cli', 'synth', str(out), '--n', '20000', '-q'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while len(list((out/'images').glob('*.png'))) < 5 and time.time() - t0 < 300 and p.poll() is None: time.sleep(0.2)
    assert len(list((out/'images').glob('*.png'))) >= 5, 'the synth command drew no poster in 5 min'
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.splitlines() == ['posterlens: interrupted; partial results are kept (finished stages, caption cache, downloads)']
    assert len(list((out/'images').glob('*.png'))) >= 5 and not (out/'posters.csv').exists()
