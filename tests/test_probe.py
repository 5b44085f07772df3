"""Bad inputs a new user meets, each a one-line error with exit status 2 before any long work (or, for a URL that
redirects forever, a permanent download failure that the next plain run does not ask for again)."""
import collections, io, shutil, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from posterlens.cli import main
from posterlens.core import find_root, read_parquet

ROOT = find_root(Path(__file__).parent)


def _jpeg(k:int) -> bytes:
    buf = io.BytesIO(); Image.new('RGB', (40, 60), (k * 60 % 256, 50, 120)).save(buf, format='JPEG')
    return buf.getvalue()


def _posters(d:Path, n:int) -> list[str]:
    (d/'p').mkdir(parents=True, exist_ok=True)
    for k in range(n): (d/'p'/f'{k}.jpg').write_bytes(_jpeg(k))
    return [f'p/{k}.jpg' for k in range(n)]


def _run(tmp, *args, **sets) -> int:
    sets = {'runs_dir': str(tmp/'runs'), 'cache_dir': str(tmp/'cache'), 'download_dir': str(tmp/'dl'), **sets}
    return main([*args, '--variant', 'smoke', *[a for k, v in sets.items() for a in ('--set', f'{k}={v}')]])


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith('posterlens: error: '), err
    return err[-1]


def test_more_folds_than_rows_is_refused_when_the_data_is_loaded(tmp_path, capsys):
    imgs = _posters(tmp_path, 3)
    (tmp_path/'few.csv').write_text('image,target\n' + ''.join(f'{p},{k}\n' for k, p in enumerate(imgs)))
    assert _run(tmp_path, 'run', '-q', dataset=tmp_path/'few.csv', folds=5) == 2
    assert 'folds = 5 but few.csv has only 3 usable rows: lower folds' in _one_error(capsys)
    assert not (tmp_path/'runs'/'smoke'/'caption').exists()            # stopped before captioning


@pytest.fixture
def project(tmp_path, monkeypatch):
    "A copy of settings.ini (and prompts) in a folder of its own, the current directory."
    shutil.copy(ROOT/'settings.ini', tmp_path/'settings.ini')
    shutil.copytree(ROOT/'prompts', tmp_path/'prompts')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_extends_cycle_names_the_cycle(project, capsys):
    with open(project/'settings.ini', 'a') as f: f.write('\n[variant:c1]\nextends = c2\n\n[variant:c2]\nextends = c1\n')
    assert main(['settings', '--variant', 'c1']) == 2
    assert 'cycle: c1 -> c2 -> c1' in _one_error(capsys)


def test_unknown_extends_names_its_section(project, capsys):
    with open(project/'settings.ini', 'a') as f: f.write('\n[variant:c3]\nextends = smoek\n')
    assert main(['settings', '--variant', 'c3']) == 2
    msg = _one_error(capsys)
    assert "unknown variant 'smoek' (extends = smoek in [variant:c3] of settings.ini)" in msg and "did you mean 'smoke'?" in msg


def test_latin1_csv_says_how_to_fix_it(tmp_path, capsys):
    imgs = _posters(tmp_path, 3)
    (tmp_path/'latin.csv').write_bytes(('image,title,target\n' + ''.join(f'{p},Amélie {k},{k}\n' for k, p in enumerate(imgs)))
                                       .encode('latin-1'))
    assert _run(tmp_path, 'data', dataset=tmp_path/'latin.csv') == 2
    msg = _one_error(capsys)
    assert 'latin.csv is not UTF-8' in msg and "it looks like latin-1" in msg and "encoding='latin-1'" in msg


def test_constant_target_stops_train_and_warns_even_quiet(tmp_path, capsys):
    imgs = _posters(tmp_path, 4)
    (tmp_path/'const.csv').write_text('image,target\n' + ''.join(f'{p},7\n' for p in imgs))
    assert _run(tmp_path, 'run', '-q', dataset=tmp_path/'const.csv') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == "data: Warning: the target 'target' is 7 in every usable row: there is nothing to explain (is target_col the right column?)"
    assert err[-1] == ('posterlens: error: the target is 7 in every usable row: there is nothing to fit (is target_col the '
                       'right column?)')
    assert not (tmp_path/'runs'/'smoke'/'model'/'metrics.json').exists()


class _Loop(BaseHTTPRequestHandler):
    "/loop/* redirects to itself; anything else is a JPEG."
    def log_message(self, *a): pass
    def do_GET(self):
        with self.server.lock: self.server.hits[self.path] += 1
        if self.path.startswith('/loop/'):
            self.send_response(302); self.send_header('Location', self.path); self.send_header('Content-Length', '0'); self.end_headers()
            return
        body = _jpeg(len(self.path))
        self.send_response(200); self.send_header('Content-Type', 'image/jpeg'); self.send_header('Content-Length', str(len(body)))
        self.end_headers(); self.wfile.write(body)


def test_redirect_loop_is_a_permanent_failure(tmp_path, capsys):
    srv = ThreadingHTTPServer(('127.0.0.1', 0), _Loop)
    srv.daemon_threads, srv.hits, srv.lock = True, collections.Counter(), threading.Lock()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = lambda p: f'http://127.0.0.1:{srv.server_port}/{p}'
        (tmp_path/'urls.csv').write_text(f"image,target\n{url('a.jpg')},1\n{url('b.jpg')},2\n{url('loop/c.jpg')},3\n")
        assert _run(tmp_path, 'data', '-q', dataset=tmp_path/'urls.csv', download_attempts=2) == 0
        skipped = read_parquet(tmp_path/'runs'/'smoke'/'data'/'skipped.parquet')
        assert skipped.reason.tolist() == ['download http_error'] and 'redirect loop' in skipped.detail[0]
        hits = srv.hits['/loop/c.jpg']
        assert hits > 0
        assert _run(tmp_path, 'data', '-q', dataset=tmp_path/'urls.csv', download_attempts=2) == 0
        assert srv.hits['/loop/c.jpg'] == hits                             # not asked again by a plain run
    finally:
        srv.shutdown(); srv.server_close()
