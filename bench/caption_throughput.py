"""Throughput and exactly-once check of the Gemini captioning runner against the local fake Gemini server.

Starts tests/fake_gemini.py with 20% HTTP 429s, 5% HTTP 500s and 5% safety blocks, captions N generated images
with the real `GeminiCaptioner` (google-genai SDK over HTTP) through `posterlens.caption.caption_images` at a
configured requests-per-minute limit, then prints:

- the final status of every image (each must be ok / blocked / truncated / failed),
- images answered `ok` more than once (counted server-side per image hash; must be 0),
- requests sent (all attempts, retries included) and their outcomes,
- achieved requests per minute (server-side, first to last request) and its ratio to the limit (target >= 0.90),
  plus the steady-state rate (until the last image got its first request; the tail of lone retries excluded).

Usage: .venv/bin/python bench/caption_throughput.py [--n 300] [--rpm 1200] [--concurrency 8] [--smoke]
Exit status 0 when every check holds, 1 otherwise. Nothing leaves the machine: the fake listens on 127.0.0.1.
"""
from __future__ import annotations
import argparse, sys, tempfile, time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from fake_gemini import FakeGemini  # noqa: E402
from _results import write_result  # noqa: E402

from PIL import Image  # noqa: E402
from posterlens.caption import Backoff, CaptionCache, backoff, caption_images  # noqa: E402
from posterlens.vlm import GeminiCaptioner  # noqa: E402

FINAL = {'ok', 'blocked', 'truncated', 'failed'}


def images(n:int, d:Path) -> list[Path]:
    "`n` distinct small PNG posters written to `d`."
    out = []
    for i in range(n):
        p = d/f'{i:04d}.png'
        Image.new('RGB', (24, 36), (i % 256, (i * 7) % 256, (i // 256) * 40 % 256)).save(p)
        out.append(p)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=300, help='images')
    ap.add_argument('--rpm', type=float, default=1200, help='requests-per-minute limit given to the runner')
    ap.add_argument('--concurrency', type=int, default=8)
    ap.add_argument('--max-retries', type=int, default=8)
    ap.add_argument('--rate429', type=float, default=0.20)
    ap.add_argument('--rate500', type=float, default=0.05)
    ap.add_argument('--rate-block', type=float, default=0.05)
    ap.add_argument('--retry-after', type=float, default=0.5, help='seconds the fake asks for in its 429 RetryInfo / Retry-After')
    ap.add_argument('--latency', type=float, default=0.05, help='seconds the fake takes per answer')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--backoff-initial', type=float, default=None,
                    help="first backoff of the runner, seconds (default: posterlens.caption.Backoff's)")
    ap.add_argument('--backoff-jitter', type=float, default=None, help="backoff jitter, seconds (default: Backoff's)")
    ap.add_argument('--smoke', action='store_true', help='tiny sizes (20 images at rpm 2400): seconds; the targets are not checked')
    a = ap.parse_args(argv)
    if a.smoke: a.n, a.rpm, a.latency = 20, 2400, 0.01
    wait = Backoff(initial=backoff.initial if a.backoff_initial is None else a.backoff_initial,
                   max=backoff.max, jitter=backoff.jitter if a.backoff_jitter is None else a.backoff_jitter)

    with tempfile.TemporaryDirectory() as d, FakeGemini(rate429=a.rate429, rate500=a.rate500, rate_block=a.rate_block,
                                                         retry_after=a.retry_after, latency=a.latency, seed=a.seed) as g:
        imgs = images(a.n, Path(d))
        cap = GeminiCaptioner(api_key='bench-fake-key', base_url=g.url, timeout_s=10)
        t0 = time.perf_counter()
        rows = caption_images(cap, imgs, 'Describe this poster.', CaptionCache(Path(d)/'cache'), concurrency=a.concurrency,
                              rpm=a.rpm, max_retries=a.max_retries, progress=False, wait=wait)
        wall = time.perf_counter() - t0
        ts = sorted(r['t'] for r in g.requests)
        first = {}                                                    # image -> time of its first request
        for r in sorted(g.requests, key=lambda r: r['t']): first.setdefault(r['image'], r['t'])
        sent, outcomes, dup = len(ts), Counter(r['outcome'] for r in g.requests), g.duplicates()
    status = Counter(r['status'] for r in rows)
    span = ts[-1] - ts[0] if len(ts) > 1 else float('nan')
    achieved = (sent - 1) / span * 60 if span > 0 else float('nan')   # intervals between first and last request
    ratio = achieved / a.rpm
    # steady state: while images were still waiting for their first request (excludes the tail of lone retries)
    t_new = max(first.values())
    n_steady = sum(t <= t_new for t in ts)
    steady = (n_steady - 1) / (t_new - ts[0]) * 60 if t_new > ts[0] else float('nan')
    all_final = len(rows) == a.n and set(status) <= FINAL

    print(f'images: {a.n}   rpm limit: {a.rpm:g}   concurrency: {a.concurrency}   max_retries: {a.max_retries}')
    print(f'fake: {a.rate429:.0%} 429 (retry hint {a.retry_after:g}s), {a.rate500:.0%} 500, {a.rate_block:.0%} safety blocks, latency {a.latency:g}s')
    print(f"runner backoff: exponential from {wait.initial:g}s + jitter up to {wait.jitter:g}s; the server's hint + jitter when it gives one")
    print(f'final statuses: {dict(sorted(status.items()))}   every image final: {all_final}')
    print(f'requests sent: {sent}   outcomes: {dict(sorted(outcomes.items()))}')
    print(f'images answered ok twice (server-side): {dup}')
    print(f'wall time: {wall:.1f}s   requests/minute achieved: {achieved:.0f} (server-side, first to last request), '
          f'{sent / wall * 60:.0f} (requests / wall time)')
    print(f'steady state (until the last image got its first request): {n_steady} requests, {steady:.0f}/minute, '
          f'ratio {steady / a.rpm:.3f}')
    print(f'throughput ratio (achieved / limit, whole run): {ratio:.3f}   target >= 0.90')
    ok = all_final and dup == 0 and ratio >= 0.90
    print('PASS' if ok else 'FAIL')
    write_result('caption_throughput', {'n': a.n, 'rpm': a.rpm, 'concurrency': a.concurrency, 'rate429': a.rate429,
                                        'rate500': a.rate500, 'rate_block': a.rate_block, 'statuses': dict(status),
                                        'requests': sent, 'outcomes': dict(outcomes), 'duplicates': dup, 'wall_s': wall,
                                        'achieved_rpm': achieved, 'ratio': ratio, 'steady_rpm': steady, 'pass': bool(ok)},
                 [(f'Gemini runner vs fake (20% 429, 5% 500): achieved / limit rpm ({a.n} images at {a.rpm:g} rpm; target >= 0.90)',
                   f'{ratio:.3f}'), ('images answered ok twice', dup)], smoke=a.smoke)
    return 0 if ok or a.smoke else 1


if __name__ == '__main__': sys.exit(main())
