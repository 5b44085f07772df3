"""Same image, same words: the offline describer at concurrency 1 and 8, twice each, through the caption runner.

Describes a folder of real posters (default: ../shared/data/posters-sample/posters next to the checkout, when it is
there) and synthetic posters with faces and text (drawn by posterlens.data.draw_poster), four times each with a fresh
cache: concurrency 1, 8, 1, 8. Prints, per image set, how many captions differ from the first run (target 0), how
many images the runner recorded as failed, and the seconds per run. Also calls `find_faces` on the same images from
8 threads and counts the results that differ from one thread.

Usage: .venv/bin/python bench/describer_determinism.py [--real DIR] [--n-synth 120] [--limit 0] [--smoke]
Exit status 0 when every caption was identical in every run and nothing failed.
"""
from __future__ import annotations
import argparse, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from _results import write_result, sample_dir
from posterlens.caption import CaptionCache, caption_images
from posterlens.data import draw_poster, fake_title
from posterlens.describe import DescribeCaptioner, find_faces, load_bgr

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = sample_dir()/'posters'


def face_posters(d:Path, n:int, seed:int=0) -> list[Path]:
    "`n` synthetic posters with 1-3 faces and a title each."
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        draw_poster(*rng.integers(0, 2, 5).tolist(), fake_title(rng), rng, faces=1 + i % 3).save(d/f'{i:03d}.png')
        out.append(d/f'{i:03d}.png')
    return out


def check(name:str, paths:list, tmp:Path, figs:dict) -> bool:
    runs, secs, failed = [], [], 0
    for i, c in enumerate((1, 8, 1, 8)):
        t0 = time.perf_counter()
        res = caption_images(DescribeCaptioner(), paths, '', CaptionCache(tmp/f'{name}-{i}'), concurrency=c, progress=False)
        secs.append(time.perf_counter() - t0)
        failed += sum(r['status'] != 'ok' for r in res)
        runs.append([r['text'].encode() for r in res])
    differ = [sum(a != b for a, b in zip(runs[0], r)) for r in runs[1:]]
    grays = [cv2.cvtColor(load_bgr(p), cv2.COLOR_BGR2GRAY) for p in paths]
    one = [find_faces(g) for g in grays]
    with ThreadPoolExecutor(8) as ex: many = list(ex.map(find_faces, grays*3))
    faces_differ = sum(a != b for a, b in zip(one*3, many))
    with_faces = sum(b'No faces' not in t for t in runs[0])
    print(f'{name}: {len(paths)} images, {with_faces} with faces; captions differing from the first concurrency-1 run '
          f'(runs c=8, c=1, c=8): {differ}; failed rows: {failed}; byte-identical: {len(paths) - max(differ)}/{len(paths)}; '
          f'find_faces from 8 threads differing: {faces_differ}/{len(many)}; seconds per run: {", ".join(f"{s:.1f}" for s in secs)}')
    figs[name] = {'images': len(paths), 'with_faces': with_faces, 'differ': differ, 'failed': failed,
                  'faces_differ': faces_differ, 'seconds': secs}
    return max(differ) == 0 and failed == 0 and faces_differ == 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--real', default=str(SAMPLE), help='a folder of real posters (.jpg/.png); skipped when missing')
    ap.add_argument('--n-synth', type=int, default=120, help='synthetic posters with faces and text')
    ap.add_argument('--limit', type=int, default=0, help='at most this many real posters (0: all)')
    ap.add_argument('--smoke', action='store_true', help='6 synthetic and at most 6 real posters: seconds')
    a = ap.parse_args(argv)
    if a.smoke: a.n_synth, a.limit = 6, 6
    ok, figs = True, {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if a.n_synth: ok &= check('synthetic posters with faces', face_posters(tmp/'synth', a.n_synth), tmp, figs)
        real = Path(a.real)
        if real.is_dir():
            fs = sorted(p for p in real.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
            ok &= check('real posters', fs[:a.limit] if a.limit else fs, tmp, figs)
        else: print(f'no real posters at {real}: skipped')
    print('PASS' if ok else 'FAIL')
    rows = [(f"{k}: captions differing over 4 runs at concurrency 1 and 8 (target 0)",
             f"{max(f['differ'])} of {f['images']}") for k, f in figs.items()]
    write_result('describer_determinism', {'sets': figs, 'pass': bool(ok)}, rows, smoke=a.smoke,
                 skipped=None if figs else 'no images')
    return 0 if ok else 1


if __name__ == '__main__': sys.exit(main())
