"""The caption runner against a server that enforces `rpm` over a sliding 60 s window, from the first request on.

Starts tests/fake_gemini.py with `rpm_limit = rpm` (a request beyond `rpm` accepted ones in any 60 s is refused
with 429 RESOURCE_EXHAUSTED, as a quota-enforcing server does), captions N generated images with the real
`GeminiCaptioner` through `posterlens.caption.caption_images` at that `rpm`, and prints:

- quota refusals (target 0),
- the busiest 60 s window of request arrivals, server-side (target <= rpm), and of accepted requests,
- the time of the whole run and the achieved rate.

`--compare` runs the same a second time with the previous limiter (start slots spaced 60/rpm apart, handed out
before the client existed, no window check), to show what the sliding-window limiter changes.

Usage: .venv/bin/python bench/rate_window.py [--n 300] [--rpm 300] [--concurrency 5] [--compare] [--smoke]
Exit status 0 when there was no refusal and the busiest window held at most rpm requests.
"""
from __future__ import annotations
import argparse, sys, tempfile, threading, time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from fake_gemini import FakeGemini  # noqa: E402
from _results import write_result  # noqa: E402

from PIL import Image  # noqa: E402
import posterlens.caption as pc  # noqa: E402
from posterlens.vlm import GeminiCaptioner  # noqa: E402


class PacingOnly:
    "The previous limiter: start slots `60/rpm` apart, reserved in order, no check of the actual start times."
    def __init__(self, rpm=None):
        self.interval, self._next, self._lock = (60.0/rpm if rpm else 0.0), 0.0, threading.Lock()
    def acquire(self, cancel=None):
        if not self.interval: return time.monotonic()
        with self._lock:
            now = time.monotonic(); t = max(now, self._next); self._next = t + self.interval
        if t > now: time.sleep(t - now)
        return t


class LazyClient(GeminiCaptioner):
    "The previous order of things: the SDK client is built inside the first requests, after their starts were granted."
    def open(self): pass


def images(n:int, d:Path) -> list[Path]:
    out = []
    for i in range(n):
        p = d/f'{i:04d}.png'
        Image.new('RGB', (24, 36), (i % 256, (i * 7) % 256, (i // 256) * 40 % 256)).save(p)
        out.append(p)
    return out


def run(a, old:bool) -> dict:
    saved = pc.RateLimiter
    if old: pc.RateLimiter = PacingOnly
    try:
        with tempfile.TemporaryDirectory() as d, FakeGemini(rpm_limit=int(a.rpm), rpm_window=60.0, latency=a.latency) as g:
            cap = (LazyClient if old else GeminiCaptioner)(api_key='bench-fake-key', base_url=g.url, timeout_s=10)
            t0 = time.perf_counter()
            rows = pc.caption_images(cap, images(a.n, Path(d)), 'Describe this poster.', pc.CaptionCache(Path(d)/'cache'),
                                     concurrency=a.concurrency, rpm=a.rpm, max_retries=8, progress=False)
            wall = time.perf_counter() - t0
            out = Counter(r['outcome'] for r in g.requests)
            ts = sorted(r['t'] for r in g.requests)
            return dict(wall=wall, sent=len(g.requests), refused=out['quota'], busiest=g.busiest_window(),
                        busiest_ok=g.busiest_window({'ok'}), status=Counter(r['status'] for r in rows),
                        first5=ts[min(4, len(ts) - 1)] - ts[0], span=ts[-1] - ts[0])
    finally: pc.RateLimiter = saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=300, help='images')
    ap.add_argument('--rpm', type=float, default=300, help='the runner limit and the server quota per sliding minute')
    ap.add_argument('--concurrency', type=int, default=5)
    ap.add_argument('--latency', type=float, default=0.05, help='seconds the fake takes per answer')
    ap.add_argument('--compare', action='store_true', help='also run the previous (pacing-only, lazy client) limiter')
    ap.add_argument('--smoke', action='store_true', help='tiny sizes (12 images at rpm 600): seconds')
    a = ap.parse_args(argv)
    if a.smoke: a.n, a.rpm, a.latency = 12, 600, 0.01
    print(f'images: {a.n}   rpm (runner) = quota (server, sliding 60 s): {a.rpm:g}   concurrency: {a.concurrency}')
    ok, figs = True, {}
    for name, old in [('sliding-window limiter', False)] + ([('previous limiter', True)] if a.compare else []):
        r = run(a, old)
        print(f'{name}: requests {r["sent"]}, quota refusals {r["refused"]}, busiest 60 s window {r["busiest"]} requests '
              f'({r["busiest_ok"]} accepted), first 5 arrivals within {r["first5"]:.3f} s, run {r["wall"]:.1f} s, '
              f'arrivals span {r["span"]:.1f} s, statuses {dict(r["status"])}')
        if not old: ok = r['refused'] == 0 and r['busiest'] <= a.rpm
        figs[name] = {**r, 'status': dict(r['status'])}
    print('PASS' if ok else 'FAIL')
    new = figs['sliding-window limiter']
    write_result('rate_window', {'n': a.n, 'rpm': a.rpm, 'concurrency': a.concurrency, 'runs': figs, 'pass': bool(ok)},
                 [(f'sliding-minute quota = rpm ({a.n} images at {a.rpm:g} rpm): quota refusals (target 0)', new['refused']),
                  ('busiest 60 s window, requests (target <= rpm)', new['busiest'])], smoke=a.smoke)
    return 0 if ok else 1


if __name__ == '__main__': sys.exit(main())
