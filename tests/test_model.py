"Text regressor, folds, baselines and the training stage, exercised from outside the notebook (tiny random BERT)."
import numpy as np
import pandas as pd
import pytest
import torch
from fastcore.basics import AttrDict
from sklearn.model_selection import KFold

from posterlens.core import PosterlensError, load_settings
from posterlens.model import (TextRegressor, tiny_text_model, toy_captions, make_folds, folds_to_run, rmse, rmse_ci,
                              rmse_diff_ci, cross_validate, fit_covariates, encode_covariates, covariate_columns,
                              load_fold_model, resolve_text_model, train_fold)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_text_model(tmp_path_factory.mktemp("tiny") / "bert")


def _cfg(tiny, **kw):
    base = dict(text_model=tiny, pooling="mean", max_length=64, batch_size=16, epochs=2, lr=3e-3, weight_decay=0.01,
                warmup_ratio=0.1, seed=42, folds=3, fold_subset="all", n_bootstrap=200, use_covariates=False,
                covariates=[])
    return AttrDict({**base, **kw})


def test_minilm_resolves_to_local_folder():
    p = resolve_text_model("minilm")
    assert (p and __import__("pathlib").Path(p, "config.json").exists())
    assert resolve_text_model("MiniLM") == p


def test_predict_keeps_order_and_is_padding_invariant(tiny):
    m = TextRegressor.from_pretrained(tiny, target_mean=5.0, target_std=2.0)
    texts = toy_captions(9, seed=3).caption.tolist()
    texts[4] = "Dark."                               # a very short one among long ones
    one_by_one = np.array([m.predict([t])[0] for t in texts])
    np.testing.assert_allclose(m.predict(texts, batch_size=4), one_by_one, atol=1e-4)
    np.testing.assert_allclose(m.predict(texts[::-1], batch_size=64), one_by_one[::-1], atol=1e-4)
    b = m.tokenize(texts[:3])
    assert m(**b).shape == (3,)
    np.testing.assert_allclose(m.predict(texts[:3], standardized=True) * 2.0 + 5.0, m.predict(texts[:3]), atol=1e-5)


def test_truncation_at_max_length(tiny):
    m = TextRegressor.from_pretrained(tiny, max_length=16)
    assert m.tokenize(["word " * 200])["input_ids"].shape[1] == 16


def test_save_load_round_trip_with_covariates(tiny, tmp_path):
    cov = pd.DataFrame({"year": [1990, 2000, 2010], "genre": ["Drama, Crime", "Comedy", "Drama"]})
    spec = fit_covariates(cov, ["year", "genre"])
    m = TextRegressor.from_pretrained(tiny, pooling="cls", covariate_spec=spec, target_mean=7.5, target_std=0.8)
    torch.nn.init.normal_(m.head.weight)            # make the covariates matter
    texts = ["The image is dark.", "Cool blue tones dominate.", "No faces are visible."]
    m.save(tmp_path / "m")
    m2 = TextRegressor.load(tmp_path / "m")
    assert (m2.pooling, m2.target_mean, m2.target_std, m2.n_cov) == ("cls", 7.5, 0.8, 4)
    np.testing.assert_allclose(m2.predict(texts, covariates=cov), m.predict(texts, covariates=cov), atol=1e-5)
    # covariates change the prediction; without them the training mean of each feature is used
    other = cov.assign(year=[2020, 2020, 2020])
    assert not np.allclose(m2.predict(texts, covariates=other), m2.predict(texts, covariates=cov))
    mean_cov = np.tile(np.array(spec["train_mean"], dtype=np.float32), (3, 1))
    np.testing.assert_allclose(m2.predict(texts), m2.predict(texts, covariates=mean_cov), atol=1e-5)


def test_folds_match_sklearn():
    for n, k, seed in [(40, 2, 42), (1000, 5, 42), (17, 5, 0)]:
        ours = make_folds(n, k, seed)
        ref = list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)))
        for (a, b), (c, d) in zip(ours, ref):
            assert a.tolist() == c.tolist() and b.tolist() == d.tolist()
    assert folds_to_run(AttrDict(folds=5, fold_subset=[0])) == [0]
    with pytest.raises(PosterlensError):
        folds_to_run(AttrDict(folds=5, fold_subset=[5]))


def test_rmse_ci_coverage():
    "The 95% bootstrap interval covers the true RMSE of a known error distribution most of the time."
    rng = np.random.default_rng(0)
    true_rmse, hits, sims = 1.0, 0, 200
    for s in range(sims):
        err = rng.normal(0, true_rmse, 300)
        _, lo, hi = rmse_ci(err, np.zeros(300), n_boot=300, seed=s)
        hits += lo <= true_rmse <= hi
    assert 0.88 <= hits / sims <= 0.99


def test_paired_difference_detects_a_better_predictor():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 300)
    d, lo, hi = rmse_diff_ci(y, 0.8 * y, np.zeros(300), n_boot=500)
    assert hi < 0 and lo < d < hi
    d, lo, hi = rmse_diff_ci(y, np.zeros(300), 0.8 * y, n_boot=500)
    assert lo > 0


def test_paired_difference_does_not_separate_identical_predictors():
    "Two predictors 0.001 apart: the interval of their RMSE difference holds 0 on both sides, and is not a point."
    y = np.random.default_rng(0).normal(size=400)
    d, lo, hi = rmse_diff_ci(y, np.zeros(400), np.full(400, 1e-3), n_boot=500)
    assert lo < d < hi and lo < 0 < hi
    assert abs(d) < 1e-3 and hi - lo > 1e-4


def test_training_beats_mean_on_a_learnable_task(tiny):
    df = toy_captions(200, seed=2)
    tr, va = df.iloc[:160], df.iloc[160:]
    res = train_fold(tr.caption, tr.target, va.caption, va.target, _cfg(tiny, epochs=5), None, progress=False)
    assert res["val_rmse"] < rmse(va.target, np.full(len(va), tr.target.mean()))
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4, 5]


def test_cross_validate_with_covariates(tiny, tmp_path):
    "A covariate that carries signal the text lacks improves TF-IDF; the model takes it too."
    df = toy_captions(90, seed=4)
    rng = np.random.default_rng(0)
    df["runtime"] = rng.normal(120, 20, len(df))
    df["genre"] = rng.choice(["Drama", "Comedy, Drama", "Horror"], len(df))
    df["target"] = df.target + 0.03 * (df.runtime - 120) - 1.0 * (df.genre == "Horror")
    cfg = _cfg(tiny, use_covariates=True, covariates=["runtime", "genre"], fold_subset=[1])
    met, oof = cross_validate(df, cfg, tmp_path / "cv", key="k", progress=False)
    assert "pred_tfidf_cov" in oof and met["covariates"] == ["runtime", "genre"]
    assert met["tfidf_cov"]["rmse"] < met["tfidf"]["rmse"]
    assert met["folds_run"] == [1] and len(oof) == len(make_folds(90, 3, 42)[1][1])
    m = TextRegressor.load(tmp_path / "cv" / "fold1")
    assert m.n_cov == 1 + 3 and set(m.covariate_spec["categorical"]["genre"]) == {"Comedy", "Drama", "Horror"}
    with pytest.raises(PosterlensError, match="covariates"):
        covariate_columns(AttrDict(use_covariates=True, covariates=[]))
    assert covariate_columns(AttrDict(use_covariates=False, covariates=["runtime"])) == []


def test_load_fold_model_without_training(tmp_path):
    cfg = load_settings("smoke", {"runs_dir": str(tmp_path)})
    with pytest.raises(PosterlensError, match="no trained model"):
        load_fold_model(tmp_path / "smoke" / "model")


def test_stage_train_on_smoke(tiny, tmp_path):
    "The stage end to end on the smoke data (synthetic posters, offline describer), with the tiny model."
    from posterlens.pipeline import run_stage, stage_dir
    from posterlens.core import read_json, read_parquet
    cfg = load_settings("smoke", {"runs_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                                  "text_model": tiny, "lr": 3e-3, "n_bootstrap": 100, "pixel_baseline": False})
    met = run_stage(cfg, "train", progress=False)
    r = tmp_path / "runs" / "smoke" / "model"
    assert read_json(r / "metrics.json")["n"] == met["n"] > 0
    oof = read_parquet(r / "oof.parquet")
    assert list(oof.columns) == ["id", "fold", "target", "pred_model", "pred_mean", "pred_tfidf"]
    assert set(met) >= {"n", "target_std", "folds_run", "model", "mean", "tfidf", "beats_mean", "seconds", "settings", "history"}
    assert isinstance(met["beats_mean"], bool) and len(met["model"]["ci"]) == 2
    m = load_fold_model(stage_dir(cfg, "train"))
    assert m.predict(["The image is dark and low-key."]).shape == (1,)
    stamp = (r / "stage.json").stat().st_mtime_ns
    assert run_stage(cfg, "train", progress=False) == read_json(r / "metrics.json") and (r / "stage.json").stat().st_mtime_ns == stamp



def test_frozen_layers_train_only_the_top(tiny, tmp_path):
    "With frozen layers the lower encoder keeps its pretrained weights; the saved model reproduces the fold's predictions."
    from posterlens.model import _FEATURES
    df = toy_captions(120, seed=5)
    tr, va = df.iloc[:96], df.iloc[96:]
    _FEATURES.clear()
    res = train_fold(tr.caption, tr.target, va.caption, va.target, _cfg(tiny, epochs=3, freeze_layers=1), tmp_path / "f",
                     progress=False)
    m = TextRegressor.load(tmp_path / "f")
    np.testing.assert_allclose(m.predict(va.caption), res["val_pred"], atol=1e-4)
    fresh = TextRegressor.from_pretrained(tiny)
    emb, low, top = (lambda mod: mod.encoder.embeddings.word_embeddings.weight, lambda mod: mod.encoder.encoder.layer[0].output.dense.weight,
                     lambda mod: mod.encoder.encoder.layer[1].output.dense.weight)
    assert torch.equal(emb(m), emb(fresh)) and torch.equal(low(m), low(fresh))
    assert not torch.equal(top(m), top(fresh))
    # every caption's frozen output was computed once and is reused: a second run gives the same predictions
    assert len(_FEATURES) == 1 and len(next(iter(_FEATURES.values()))) == len(set(df.caption))
    again = train_fold(tr.caption, tr.target, va.caption, va.target, _cfg(tiny, epochs=3, freeze_layers=1), None, progress=False)
    np.testing.assert_allclose(again["val_pred"], res["val_pred"], atol=1e-6)
    with pytest.raises(PosterlensError, match="freeze_layers"):
        train_fold(tr.caption, tr.target, va.caption, va.target, _cfg(tiny, freeze_layers=5), None, progress=False)


def test_early_stopping_keeps_the_best_epoch(tiny):
    "patience=1 stops after one epoch without a lower validation RMSE; without patience every epoch runs."
    df = toy_captions(80, seed=6)
    tr, va = df.iloc[:64], df.iloc[64:]
    still = train_fold(tr.caption, tr.target, va.caption, va.target, _cfg(tiny, epochs=4, lr=0.0, patience=1), None, progress=False)
    assert [h["epoch"] for h in still["history"]] == [1, 2] and still["best_epoch"] == 1   # nothing learnt: stop at 2
    full = train_fold(tr.caption, tr.target, va.caption, va.target, _cfg(tiny, epochs=4, lr=0.0), None, progress=False)
    assert len(full["history"]) == 4
    res = train_fold(tr.caption, tr.target, va.caption, va.target, _cfg(tiny, epochs=6, patience=1), None, progress=False)
    h = res["history"]
    assert res["val_rmse"] == min(x["val_rmse"] for x in h) and h[-1]["epoch"] - res["best_epoch"] <= 1
    np.testing.assert_allclose(res["model"].predict(va.caption), res["val_pred"], atol=1e-4)
