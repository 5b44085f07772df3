"Tests of posterlens.pixels: the EfficientNet-Lite0 embedding cache and the ridge baseline on the text model's folds."
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from posterlens.core import PosterlensError, load_settings, run_dir, write_parquet, hash_bytes
from posterlens.model import make_folds, rmse
from posterlens.pixels import (pixels_available, use_pixels, image_tensor, embed_images, pixel_cv, add_pixel_baseline,
                               ridge_predict, _cache_file)

needs_pixels = pytest.mark.skipif(not pixels_available(), reason="the pixels extra is not installed: `make install` (or pip install -e '.[pixels]') installs it")


def test_setting():
    assert use_pixels({'pixel_baseline': False}) is False
    assert use_pixels({'pixel_baseline': 'auto'}) == pixels_available()


def test_image_tensor_scales_to_unit_range(tmp_path):
    Image.new('RGB', (30, 50), (255, 0, 127)).save(tmp_path/'a.png')
    x = image_tensor(tmp_path/'a.png', size=32)
    assert tuple(x.shape) == (3, 32, 32)
    np.testing.assert_allclose(x[:, 5, 5].numpy(), [(255 - 127)/128, -127/128, 0.0], atol=1e-6)
    (tmp_path/'b.jpg').write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(PosterlensError, match='cannot read image'): image_tensor(tmp_path/'b.jpg')


@needs_pixels
def test_embeddings_are_cached_by_content(tmp_path):
    from safetensors.numpy import load_file
    for name, col in [('red.png', (220, 20, 20)), ('blue.png', (20, 20, 220))]: Image.new('RGB', (64, 96), col).save(tmp_path/name)
    (tmp_path/'red-again.png').write_bytes((tmp_path/'red.png').read_bytes())
    cache = tmp_path/'cache'
    E = embed_images([tmp_path/'red.png', tmp_path/'blue.png', tmp_path/'red-again.png'], cache)
    assert E.shape == (3, 1280) and np.array_equal(E[0], E[2]) and not np.allclose(E[0], E[1])
    f = _cache_file(cache, hash_bytes((tmp_path/'blue.png').read_bytes()))
    np.testing.assert_array_equal(load_file(str(f))['embedding'], E[1])
    assert len(list(cache.rglob('*.safetensors'))) == 2
    (tmp_path/'moved').mkdir(); (tmp_path/'blue.png').rename(tmp_path/'moved'/'b.png')
    np.testing.assert_array_equal(embed_images([tmp_path/'moved'/'b.png'], cache)[0], E[1])


def test_ridge_baseline_on_the_model_folds():
    g = np.random.default_rng(0)
    E = g.normal(size=(90, 20))
    y = E[:, 0] - 0.5*E[:, 1] + 0.1*g.normal(size=90)
    pp = pixel_cv(E, y, folds=3, seed=7)
    folds = make_folds(90, 3, 7)
    for k, (tr, va) in enumerate(folds):
        assert sorted(pp.row[pp.fold == k]) == sorted(va)
        np.testing.assert_allclose(pp.pred_pixels[pp.fold == k], ridge_predict(E[tr], y[tr], E[va]))
    assert rmse(y[pp.row], pp.pred_pixels) < 0.3*y.std()


@needs_pixels
@pytest.mark.slow
def test_add_pixel_baseline_on_synthetic_posters(tmp_path):
    from posterlens.data import make_synth
    csv = make_synth(tmp_path/'synth', n=45, seed=1)
    syn = pd.read_csv(csv)
    cfg = load_settings('smoke', {'runs_dir': str(tmp_path/'runs'), 'cache_dir': str(tmp_path/'cache'), 'folds': 3})
    images = pd.Series([str(csv.parent/p) for p in syn.image], index=syn.id.astype(str))
    df = syn[['id', 'target']].assign(caption='x')
    tr, va = make_folds(45, 3, cfg.seed)[0]
    oof = pd.DataFrame({'id': df.id.iloc[va], 'fold': 0, 'target': df.target.iloc[va], 'pred_model': 6.0,
                        'pred_mean': df.target.iloc[tr].mean()})
    m, o = add_pixel_baseline({'folds_run': [0], 'vs_mean': {'model': {}}}, oof, df, cfg, images, progress=False)
    assert o.pred_pixels.notna().all() and len(o) == len(va)
    assert abs(m['pixels']['rmse'] - rmse(o.target, o.pred_pixels)) < 1e-12 and len(m['pixels']['per_fold']) == 1
    assert set(m['vs_mean']) == {'model', 'pixels'} and 'rmse_diff' in m['model_vs_pixels']
