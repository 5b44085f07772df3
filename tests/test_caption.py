"Caption cache, runner semantics (retries, rate limit, kill safety) and the caption stage, from outside the notebook."
import json, os, re, shutil, signal, subprocess, sys, textwrap, threading, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import posterlens.caption as caption
from posterlens.caption import (CaptionCache, CaptionResult, Captioner, RateLimiter, Retryable, Unreachable, busiest_window,
                                caption_images, check_caption_run)
from posterlens.pipeline import CAPTIONERS, make_captioner, run_stage
from posterlens.core import PosterlensError, find_root, load_settings, read_json
from posterlens.describe import TONE


class Fake(Captioner):
    "A test backend: answers after `fails` transient errors per image, counting the attempts it receives."
    name, model = 'fake', 'fake-1'

    def __init__(self, fails=0, retry_after=None, error=None, status='ok'):
        self.fails, self.retry_after, self.error, self.status = fails, retry_after, error, status
        self.calls, self.lock = {}, threading.Lock()

    @property
    def n_calls(self): return sum(self.calls.values())

    def caption(self, image, mime, prompt):
        with self.lock: n = self.calls[image] = self.calls.get(image, 0) + 1
        if self.error: raise self.error
        if n <= self.fails: raise Retryable(f'HTTP 429 (attempt {n})', retry_after=self.retry_after)
        if self.status == 'failed': return CaptionResult('', 'failed', 'finish_reason=OTHER')
        return CaptionResult(f'An image of {len(image)} bytes.', self.status, '', 7, 3)


@pytest.fixture
def fast_backoff():
    "Milliseconds instead of seconds between retries: the runner's `wait` argument."
    return caption.Backoff(initial=0.01, max=0.02, jitter=0.01)


def images(d, n):
    d = Path(d); d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = d/f'img{i:03d}.bin'; p.write_bytes(b'\x89' + bytes(str(i), 'ascii')*(i + 1)); out.append(p)
    return out


def test_cache_round_trip(tmp_path):
    c = CaptionCache(tmp_path/'c')
    k = c.key(b'abc', 'prompt', Fake())
    assert c.get(k) is None
    r = CaptionResult('Blue tones dominate.', 'truncated', 'finish_reason=MAX_TOKENS', 12, 34, 'm')
    c.put(k, r)
    assert c.get(k) == r
    assert CaptionCache(tmp_path/'c').get(k) == r                       # a fresh instance reads it back
    assert c.path(k) == tmp_path/'c'/k[:2]/f'{k}.json'
    assert [p.name for p in (tmp_path/'c'/k[:2]).iterdir()] == [f'{k}.json']   # no temporary files left
    assert json.loads(c.path(k).read_text())['status'] == 'truncated'


def test_cache_key_content_not_name(tmp_path):
    c, f = CaptionCache(tmp_path), Fake()
    a, b = tmp_path/'a.jpg', tmp_path/'sub'/'b.png'
    b.parent.mkdir(); a.write_bytes(b'same'); b.write_bytes(b'same')
    assert c.key(a.read_bytes(), 'p', f) == c.key(b.read_bytes(), 'p', f)
    assert c.key(b'same', 'p', f) != c.key(b'same', 'p2', f)


def test_no_duplicate_calls_for_cached_ok(tmp_path):
    imgs = images(tmp_path/'im', 5)
    cache, f = CaptionCache(tmp_path/'c'), Fake()
    first = caption_images(f, imgs + imgs[:2], 'p', cache, concurrency=3, progress=False)
    assert f.n_calls == 5                                               # repeated images asked once
    assert [r['status'] for r in first] == ['ok']*7 and not any(r['cached'] for r in first)
    assert [r['text'] for r in first[5:]] == [r['text'] for r in first[:2]]
    again = caption_images(f, imgs, 'p', cache, concurrency=3, progress=False)
    assert f.n_calls == 5 and all(r['cached'] for r in again)
    assert [r['key'] for r in again] == [r['key'] for r in first[:5]]
    assert [r['path'] for r in again] == [str(p) for p in imgs]        # order kept


def test_retryable_then_ok(tmp_path, fast_backoff):
    imgs = images(tmp_path/'im', 3)
    f = Fake(fails=3, retry_after=0.1)
    t0 = time.monotonic()
    res = caption_images(f, imgs, 'p', CaptionCache(tmp_path/'c'), concurrency=3, progress=False, wait=fast_backoff)
    took = time.monotonic() - t0
    assert [r['status'] for r in res] == ['ok']*3
    assert sorted(f.calls.values()) == [4, 4, 4]                        # three 429s, then the answer
    assert took >= 0.3                                                  # waited at least retry_after each time
    assert res[0]['tokens_in'] == 7 and res[0]['model'] == 'fake-1'


def test_failure_after_max_retries(tmp_path, fast_backoff):
    imgs = images(tmp_path/'im', 2)
    f = Fake(fails=100)
    res = caption_images(f, imgs, 'p', CaptionCache(tmp_path/'c'), max_retries=2, progress=False, wait=fast_backoff)
    assert [r['status'] for r in res] == ['failed', 'failed']
    assert all(r['text'] == '' for r in res)
    assert res[0]['reason'] == 'gave up after 3 attempts: HTTP 429 (attempt 3)'
    assert sorted(f.calls.values()) == [3, 3]


def test_other_errors_are_failed_rows_not_crashes(tmp_path):
    imgs = images(tmp_path/'im', 2)
    res = caption_images(Fake(error=RuntimeError('socket closed')), imgs + [tmp_path/'missing.jpg'], 'p',
                         CaptionCache(tmp_path/'c'), progress=False)
    assert [r['status'] for r in res] == ['failed']*3
    assert res[0]['reason'] == 'RuntimeError: socket closed'
    assert res[2]['reason'].startswith('cannot read image')
    assert all(r['text'] == '' for r in res)


def test_setup_errors_stop_the_run(tmp_path):
    "A setup error (bad key, wrong project) stops the run at the first answer: no other image is sent, nothing is cached."
    f = Fake(error=PosterlensError('bad key'))
    with pytest.raises(PosterlensError, match='bad key'):
        caption_images(f, images(tmp_path/'im', 5), 'p', CaptionCache(tmp_path/'c'), progress=False)
    assert f.n_calls == 1 and not list((tmp_path/'c').glob('*/*.json'))
    f4 = Fake(error=PosterlensError('bad key'))                         # four workers: at most the four first requests
    with pytest.raises(PosterlensError, match='bad key'):
        caption_images(f4, images(tmp_path/'im4', 40), 'p', CaptionCache(tmp_path/'c4'), concurrency=4, progress=False)
    assert 1 <= f4.n_calls <= 4 and not list((tmp_path/'c4').glob('*/*.json'))


def test_retry_failed_semantics(tmp_path):
    imgs = images(tmp_path/'im', 3)
    cache = CaptionCache(tmp_path/'c')
    bad = caption_images(Fake(status='failed'), imgs, 'p', cache, progress=False)
    assert [r['status'] for r in bad] == ['failed']*3 and bad[0]['reason'] == 'finish_reason=OTHER'
    f = Fake()
    kept = caption_images(f, imgs, 'p', cache, retry_failed=False, progress=False)
    assert f.n_calls == 0 and all(r['cached'] and r['status'] == 'failed' for r in kept)
    redone = caption_images(f, imgs, 'p', cache, progress=False)        # retry_failed=True is the default
    assert f.n_calls == 3 and all(r['status'] == 'ok' and not r['cached'] for r in redone)
    assert all(cache.get(r['key']).status == 'ok' for r in redone)     # the cache now holds the answers


def test_rate_limiter_window_contract():
    "At most `rpm` starts in ANY window, from the first start on, whatever the threads do (margins hold on a loaded machine)."
    rl, starts, lock = RateLimiter(20, period=1.0), [], threading.Lock()       # 20 starts per second at most
    def worker():
        for _ in range(15):
            t = rl.acquire()
            with lock: starts.append(t)
    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert len(starts) == 60
    assert busiest_window(starts, 1.0) <= 20                            # the contract, checked on every window
    assert busiest_window(starts, 1.0 + 0.5/60) <= 20                   # ... and a little margin beyond it
    assert max(starts) - min(starts) >= 2.0                             # so 60 starts need more than two windows


class LateWaker(threading.Event):
    "An event a thread waits on that wakes it `late` seconds after its timeout (as an overloaded machine would), and says when the wait began."
    def __init__(self, late):
        super().__init__(); self.late, self.waiting = late, threading.Event()
    def wait(self, timeout=None):
        self.waiting.set()
        return super().wait(None if timeout is None else timeout + self.late)


def test_rate_limiter_holds_back_a_late_thread():
    "A thread that wakes late cannot squeeze an extra start into a window: the window log uses the actual start times."
    rl, late = RateLimiter(3, period=2.0), LateWaker(1.2)            # pacing alone: slots at 0, 2/3, 4/3, 2, 8/3 s
    starts, lock = [rl.acquire()], threading.Lock()
    def sleeper():
        t = rl.acquire(late)                                           # takes the 2/3 s slot, wakes at about 1.87 s
        with lock: starts.append(t)
    th = threading.Thread(target=sleeper); th.start()
    assert late.waiting.wait(30)                                       # its slot is taken before the others ask
    for _ in range(3):
        t = rl.acquire()
        with lock: starts.append(t)
    th.join()
    assert len(starts) == 5 and None not in starts
    # without the window log the starts would be 0, 4/3, ~1.87, 2, 8/3: four in [4/3, 10/3)
    assert busiest_window(starts, 2.0) == 3


def test_rate_limiter_is_cancelled_by_a_stopped_run():
    rl, stop = RateLimiter(1, period=3600), threading.Event()
    rl.acquire(); stop.set()
    assert rl.acquire(stop) is None                                      # does not wait out the hour


class RecordingLimiter(RateLimiter):
    "A real limiter that keeps the start time it granted to each request."
    def __init__(self, *a, **kw): super().__init__(*a, **kw); self.granted = []
    def acquire(self, cancel=None):
        t = super().acquire(cancel); self.granted.append(t); return t


class StepClock:
    "Time that passes only when the limiter waits (one worker): the starts it grants are exact, whatever the machine's load."
    def __init__(self): self.t = 1000.0
    def monotonic(self) -> float: return self.t
    def sleep(self, s, cancel=None) -> bool: self.t += max(0.0, s); return False


def test_rate_limit_applies_to_retries(tmp_path, fast_backoff):
    f, rl = Fake(fails=1), RecordingLimiter(600, clock=StepClock())
    caption_images(f, images(tmp_path/'im', 4), 'p', CaptionCache(tmp_path/'c'), concurrency=1, progress=False,
                   wait=fast_backoff, limiter=rl)
    assert f.n_calls == 8 and len(rl.granted) == 8                       # every request, retries included, took a start
    assert busiest_window(rl.granted, 0.099) == 1                       # ... paced 0.1 s apart by the limiter


KILL_SCRIPT = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from posterlens.caption import Captioner, CaptionResult, CaptionCache, caption_images
    class Slow(Captioner):
        name, model = 'slow', 's1'
        def caption(self, image, mime, prompt):
            time.sleep(0.05)
            return CaptionResult('Described.', 'ok')
    imgs = sorted(Path(sys.argv[1]).glob('*.bin'))
    caption_images(Slow(), imgs, 'p', CaptionCache(sys.argv[2]), concurrency=2, progress=False)
''')


def test_kill_safety(tmp_path):
    imgs = images(tmp_path/'im', 60)
    (tmp_path/'run.py').write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(tmp_path/'run.py'), str(tmp_path/'im'), str(tmp_path/'c')])
    done = lambda: list((tmp_path/'c').glob('*/*.json')) if (tmp_path/'c').exists() else []
    t0 = time.monotonic()
    while len(done()) < 10 and time.monotonic() - t0 < 60 and proc.poll() is None: time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.wait()
    saved = done()
    assert 10 <= len(saved) < 60, len(saved)                            # killed mid-run
    for p in saved: assert json.loads(p.read_text())['text'] == 'Described.'   # every file whole

    class Slow(Captioner):                                               # same identity as the killed run
        name, model = 'slow', 's1'
        calls = 0
        def caption(self, image, mime, prompt):
            Slow.calls += 1
            return CaptionResult('Described.', 'ok')
    res = caption_images(Slow(), sorted(imgs), 'p', CaptionCache(tmp_path/'c'), progress=False)
    assert Slow.calls == 60 - len(saved)                                # only the missing ones are asked
    assert sum(r['cached'] for r in res) == len(saved)
    assert all(r['status'] == 'ok' for r in res)


def test_captioner_registry():
    assert make_captioner(load_settings('smoke')).name == 'describe'
    with pytest.raises(PosterlensError) as e: make_captioner(load_settings('smoke', {'captioner': 'nope'}))
    msg = str(e.value)
    assert "unknown captioner 'nope'" in msg and 'describe' in msg
    assert set(CAPTIONERS) == {'describe', 'gemini', 'openai', 'transformers'}


@pytest.fixture
def project(tmp_path):
    "A throw-away project: the repo's settings.ini and prompts, writing runs and caches under tmp_path."
    root = find_root(Path(__file__).parent)
    shutil.copy(root/'settings.ini', tmp_path/'settings.ini')
    shutil.copytree(root/'prompts', tmp_path/'prompts')
    return tmp_path


def test_stage_caption_on_synthetic_posters(project, capsys):
    cfg = load_settings('smoke', {'synth_n': 12}, path=project/'settings.ini')
    caps = run_stage(cfg, 'caption')
    R = project/'runs'/'smoke'/'caption'
    assert list(caps.columns) == ['id', 'caption', 'status', 'reason', 'backend', 'model', 'key', 'tokens_in',
                                  'tokens_out', 'cached']
    assert len(caps) == 12 and (caps.status == 'ok').all() and (caps.backend == 'describe').all()
    tone = '|'.join(re.escape(w.split(',')[0].split(';')[0]) for ws in TONE.values() for w in ws)   # any wording of the tone sentence
    assert caps.caption.str.contains(tone).all()
    assert not caps.cached.any()
    usage = read_json(R/'usage.json')
    assert usage['counts'] == {'ok': 12, 'blocked': 0, 'truncated': 0, 'failed': 0}
    assert usage['n_cached'] == 0 and usage['cost_usd'] == 0 and usage['failed'] == []
    assert pd.read_parquet(R/'captions.parquet').equals(caps)
    assert read_json(R/'stage.json')['key']
    # fresh: skipped; forced: everything comes from the content cache
    assert run_stage(cfg, 'caption').equals(caps)
    assert 'caption: up to date' in capsys.readouterr().out
    again = run_stage(cfg, 'caption', force=True)
    assert again.cached.all() and again.caption.equals(caps.caption)
    # another prompt: described again (the describer ignores the prompt, but the key changes)
    (project/'prompts'/'other.txt').write_text('Describe the poster.')
    other = run_stage(load_settings('smoke', {'synth_n': 12, 'prompt': 'prompts/other.txt'}, path=project/'settings.ini'), 'caption')
    assert not other.cached.any() and other.caption.equals(caps.caption) and not other.key.isin(caps.key).any()


def test_stage_caption_missing_prompt(project):
    cfg = load_settings('smoke', {'synth_n': 4, 'prompt': 'prompts/none.txt'}, path=project/'settings.ini')
    with pytest.raises(PosterlensError, match='prompt file not found'): run_stage(cfg, 'caption')


def test_caption_module_does_not_load_the_backends():
    "The caption contract stands alone: importing it loads neither the describer (OpenCV) nor the VLM clients."
    code = ("import sys, posterlens.caption; bad = [m for m in ('posterlens.describe', 'posterlens.vlm', 'cv2', 'google.genai', 'openai') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, '-c', code], check=True, cwd=find_root(Path(__file__).parent))


def test_unreachable_stops_after_a_few_attempts(tmp_path, fast_backoff):
    "A server that is down stops the run after 3 refused connections in a row (one worker); with 4 workers, at most 3 more were in flight."
    class Down(Fake):
        def caption(self, image, mime, prompt):
            with self.lock: self.calls[image] = self.calls.get(image, 0) + 1
            raise Unreachable('ConnectError: [Errno 111] Connection refused', url='http://127.0.0.1:9', source='OPENAI_BASE_URL')
    for workers, most in [(1, 3), (4, 3 + 3)]:
        down, cache = Down(), CaptionCache(tmp_path/f'c{workers}')
        with pytest.raises(PosterlensError, match=r'cannot reach http://127.0.0.1:9 \(from OPENAI_BASE_URL\)'):
            caption_images(down, images(tmp_path/'im', 50), 'p', cache, concurrency=workers, progress=False, wait=fast_backoff)   # the default stop
        assert 3 <= down.n_calls <= most, (workers, down.n_calls)
        assert not list((tmp_path/f'c{workers}').glob('*/*.json'))


def test_every_image_failed_is_an_error():
    usage = {'n': 3, 'counts': {'ok': 0, 'blocked': 0, 'truncated': 0, 'failed': 3}, 'backend': 'fake', 'model': 'fake-1',
             'failed': [{'id': 'a', 'reason': 'HTTP 400'}, {'id': 'b', 'reason': 'HTTP 400'}, {'id': 'c', 'reason': 'timeout'}]}
    with pytest.raises(PosterlensError, match=r"all 3 images failed .* 'HTTP 400' \(2 images\)"): check_caption_run(usage)
    check_caption_run({**usage, 'counts': {**usage['counts'], 'ok': 1, 'failed': 2}, 'n': 3})
