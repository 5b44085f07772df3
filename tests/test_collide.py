"""Runs that never collide: two `posterlens` processes on one variant do the work once, and every request a caption
run sends, the free `countTokens` preflight included, keeps within `rpm` per sliding minute."""
import subprocess, sys, threading
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fake_vertex import FakeVertex  # noqa: E402  (FakeGemini + countTokens, as the real API serves)
from posterlens.caption import RateLimiter, busiest_window, stage_caption  # noqa: E402
from posterlens.core import load_settings  # noqa: E402
from posterlens.model import tiny_text_model  # noqa: E402
from posterlens.pipeline import STAGES, make_captioner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_two_runs_of_one_variant_do_the_work_once(tmp_path):
    "Two concurrent `posterlens run --variant smoke`: one computes every stage, the other says it waits, then finds them up to date."
    tiny = tiny_text_model(tmp_path/'tiny')
    cmd = [sys.executable, '-m', 'posterlens.cli', 'run', '--variant', 'smoke', '--set', f'runs_dir={tmp_path}/runs',
           '--set', f'cache_dir={tmp_path}/cache', '--set', f'text_model={tiny}', '--set', 'freeze_layers=0',
           *(x for kv in ('synth_n=24', 'n_bootstrap=50', 'max_length=64', 'pixel_baseline=False', 'token_max_evals=50',
                          'max_segments=4') for x in ('--set', kv))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs): assert p.returncode == 0, err[-3000:]
    waited = [out for out, _ in outs if 'waiting: another posterlens process' in out]
    first = [out for out, _ in outs if 'waiting: another posterlens process' not in out]
    assert len(waited) == 1 and len(first) == 1, [o for o, _ in outs]
    lines = [l for l in waited[0].splitlines() if l.startswith('waiting:')]
    assert len(lines) == 1 and "'smoke'" in lines[0]                           # said once, in one line
    for name in STAGES:
        assert f'{name}: up to date' in waited[0], name                          # the second finds every stage done
        assert f'{name}: up to date' not in first[0], name                       # the first computed every stage
    assert (tmp_path/'runs'/'smoke'/'model'/'metrics.json').exists()


class VirtualClock:
    "Time that passes only when the limiter waits: a minute of requests takes no minute (one worker thread)."
    def __init__(self): self.t, self._lock = 1000.0, threading.Lock()
    def monotonic(self) -> float: return self.t
    def sleep(self, s, cancel=None) -> bool:
        with self._lock: self.t += max(0.0, s)
        return bool(cancel is not None and cancel.is_set())


class CountingFake(FakeVertex):
    "FakeVertex that logs every request of any route (generateContent, countTokens, anything else) with the clock's time."
    def __init__(self, clock, **kw):
        self.clock, self.arrivals = clock, []
        super().__init__(**kw)

    def _handler(self):
        fake, base = self, super()._handler()
        class H(base):
            def _log(self): fake.arrivals.append((fake.clock.monotonic(), urlparse(self.path).path.rsplit(':', 1)[-1]))
            def do_GET(self): self._log(); return super().do_GET()
            def do_POST(self): self._log(); return super().do_POST()
        return H


def posters(d:Path, n:int) -> pd.DataFrame:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n): Image.new('RGB', (24, 36), (i % 256, (7*i) % 256, 90)).save(d/f'{i:03d}.png')
    return pd.DataFrame({'id': [f'p{i}' for i in range(n)], 'image_path': [str(d/f'{i:03d}.png') for i in range(n)]})


@pytest.mark.parametrize('rpm', [60])
def test_every_request_of_a_caption_run_keeps_the_rate(tmp_path, monkeypatch, rpm):
    "A Gemini caption run of rpm images: the countTokens preflight and every caption request, in any 60 s, at most rpm."
    clock = VirtualClock()
    monkeypatch.setattr(RateLimiter, 'clock', clock)
    with CountingFake(clock) as g:
        monkeypatch.setenv('GEMINI_API_KEY', 'AIzaSyTEST-not-a-real-key-0123456789abcdef')
        monkeypatch.setenv('GOOGLE_GEMINI_BASE_URL', g.url)
        for k in ('GOOGLE_GENAI_USE_VERTEXAI', 'GOOGLE_API_KEY', 'GOOGLE_CLOUD_PROJECT'): monkeypatch.delenv(k, raising=False)
        cfg = load_settings('smoke', {'captioner': 'gemini', 'caption_model': 'gemini-2.5-flash', 'rpm': rpm, 'concurrency': 1,
                                      'cache_dir': str(tmp_path/'cache'), 'runs_dir': str(tmp_path/'runs')})
        with make_captioner(cfg) as cap:
            caps = stage_caption(cfg, posters(tmp_path/'img', rpm), cap, tmp_path/'out')
    assert (caps.status == 'ok').all()
    routes = pd.Series([r for _, r in g.arrivals]).value_counts().to_dict()
    assert routes.get('countTokens', 0) >= 1 and routes.get('generateContent', 0) == rpm, routes   # both kinds were sent
    assert busiest_window([t for t, _ in g.arrivals], 60.0) <= rpm, routes
