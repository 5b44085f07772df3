"The offline describer from outside the notebook: captions are a pure function of the image bytes, at any concurrency."
from pathlib import Path

import numpy as np
import pytest

from posterlens.caption import CaptionCache, caption_images
from posterlens.describe import describe_captioner
from fastcore.basics import AttrDict
from posterlens.data import draw_poster, fake_title
from posterlens.describe import DESCRIBER_VERSION, DescribeCaptioner, find_faces, load_bgr


def face_posters(d:Path, n:int, seed:int=0) -> list[Path]:
    "`n` synthetic posters with 1-3 cartoon faces and a title each, random attributes, written to `d`."
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        img = draw_poster(*rng.integers(0, 2, 5).tolist(), fake_title(rng), rng, faces=1 + i % 3)
        out.append(d/f'{i:03d}.png'); img.save(out[-1])
    return out


@pytest.fixture(scope='session')
def posters(tmp_path_factory):
    return face_posters(tmp_path_factory.mktemp('faces'), 120)


def test_captions_identical_at_any_concurrency(posters, tmp_path):
    runs = []
    for i, c in enumerate((1, 8, 1, 8)):
        res = caption_images(DescribeCaptioner(), posters, 'ignored', CaptionCache(tmp_path/f'run{i}'), concurrency=c, progress=False)
        assert all(r['status'] == 'ok' and not r['cached'] for r in res)
        runs.append([r['text'].encode() for r in res])
    differ = [sum(a != b for a, b in zip(runs[0], r)) for r in runs[1:]]
    assert differ == [0, 0, 0], f'captions that differ from the first concurrency-1 run: {differ}'
    with_faces = sum(b'No faces' not in t for t in runs[0])
    with_text = sum(b'no visible text' not in t for t in runs[0])
    assert with_faces >= 60 and with_text >= 100, (with_faces, with_text)   # the posters exercise faces and text


def test_faces_from_many_threads(posters):
    from concurrent.futures import ThreadPoolExecutor
    import cv2
    grays = [cv2.cvtColor(load_bgr(p), cv2.COLOR_BGR2GRAY) for p in posters[:40]]
    one = [find_faces(g) for g in grays]
    with ThreadPoolExecutor(8) as ex: many = list(ex.map(find_faces, grays * 4))
    assert many == one * 4


def test_version_is_in_the_cache_key(tmp_path):
    cap = describe_captioner(AttrDict())
    assert isinstance(cap, DescribeCaptioner) and DESCRIBER_VERSION >= 3
    assert cap.model == f'opencv-describer-v{DESCRIBER_VERSION}' and cap.settings()['version'] == DESCRIBER_VERSION
    c = CaptionCache(tmp_path)
    old = type('Old', (DescribeCaptioner,), {'settings': lambda self: {'version': 2, 'side': 320}})()
    assert c.key(b'img', 'p', cap) != c.key(b'img', 'p', old)       # captions of the racy version are not reused
