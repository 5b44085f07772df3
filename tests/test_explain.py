"Tests of posterlens.explain: exact segment Shapley values, factors, the permutation check, planted-effect recovery."
import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from posterlens.core import load_settings, read_json, read_parquet, run_dir
from posterlens.model import TextRegressor, resolve_text_model, tiny_text_model, toy_captions
from posterlens.explain import (split_segments, shapley_matrix, shapley_bruteforce, coalition_inputs, explain_segments,
                                explain_tokens, tokens_frame, tokens_to_explanation, normalise, find_factors,
                                factor_membership, factor_contributions, factor_stats, relative_shap, flag_significant,
                                null_factor_stats, planted_recovery, recovery_summary, WordWeights)
from posterlens.pipeline import artifact, run_stage

TRUTH = {'effects': [{'attribute': 'dark', 'coef': 0.6, 'present_phrase': 'dark', 'absent_phrase': 'bright'},
                     {'attribute': 'cool', 'coef': 0.4, 'present_phrase': 'cool', 'absent_phrase': 'warm'},
                     {'attribute': 'bw', 'coef': 0.5, 'present_phrase': 'black and white', 'absent_phrase': 'colour'},
                     {'attribute': 'cluttered', 'coef': -0.7, 'present_phrase': 'cluttered', 'absent_phrase': 'clean'},
                     {'attribute': 'big_title', 'coef': -0.3, 'present_phrase': 'large bold text', 'absent_phrase': 'small text'}]}


@pytest.fixture(scope='module')
def tok():
    return AutoTokenizer.from_pretrained(resolve_text_model('minilm'))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    path = tiny_text_model(tmp_path_factory.mktemp('tiny')/'m')
    return TextRegressor.from_pretrained(path, max_length=64, target_mean=6.0, target_std=0.7).eval()


def shapley_by_definition(v, k):
    "Shapley values from the subset formula, written independently of the matrix form."
    phi = np.zeros(k)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        for r in range(k):
            for S in combinations(others, r):
                w = math.factorial(r)*math.factorial(k - r - 1)/math.factorial(k)
                phi[i] += w*(v(frozenset(S) | {i}) - v(frozenset(S)))
    return phi


@pytest.mark.parametrize('k', [1, 2, 4, 6])
def test_shapley_matrix_is_exact(k):
    vals = np.random.default_rng(k).normal(size=1 << k)
    v = lambda S: vals[sum(1 << i for i in S)]
    phi = shapley_matrix(k) @ vals
    np.testing.assert_allclose(phi, shapley_by_definition(v, k), atol=1e-12)
    np.testing.assert_allclose(phi, shapley_bruteforce(v, k), atol=1e-12)
    assert abs(phi.sum() - (vals[-1] - vals[0])) < 1e-12


def test_split_segments():
    assert split_segments('The image is dark. It is black and white! Dr. No is big? Yes.') == \
        ['The image is dark.', 'It is black and white!', 'Dr. No is big?', 'Yes.']
    assert split_segments('') == [] and split_segments(None) == []
    long = ' '.join(f'Sentence {w} is here.' for w in 'abcdefghijklmnop')
    segs = split_segments(long, max_segments=5)
    assert len(segs) == 5 and ' '.join(segs) == long
    assert all(s.strip() for s in split_segments('A b c.\n\n...\nD e f.'))


def test_explain_segments_matches_bruteforce(tiny):
    caps = ['The image is dark and low-key. Cool blue tones dominate. No faces are visible. Large bold text dominates.',
            'It is black and white. The composition is clean and minimal.']
    seg = explain_segments(tiny, caps, ids=['a', 'b'], progress=False)
    for cid, cap in zip(['a', 'b'], caps):
        s = seg[seg.id == cid]
        parts = split_segments(cap)
        v = lambda S: tiny.predict([' '.join(parts[i] for i in sorted(S))])[0]
        np.testing.assert_allclose(s.shap.to_numpy(), shapley_bruteforce(v, len(parts)), atol=1e-4)
        assert abs(s.shap.sum() + s.base.iloc[0] - s.pred.iloc[0]) < 1e-9           # efficiency
        assert abs(s.pred.iloc[0] - tiny.predict([cap])[0]) < 1e-4
        assert abs(s.base.iloc[0] - tiny.predict([''])[0]) < 1e-4


def test_identical_subtexts_are_evaluated_once(tiny):
    cap = 'The image is dark. Cool blue tones dominate. No faces are visible.'
    one = explain_segments(tiny, [cap], progress=False).attrs['stats']
    many = explain_segments(tiny, [cap]*50, progress=False)
    assert many.attrs['stats']['unique'] == one['unique'] == 8
    assert many.attrs['stats']['coalitions'] == 50*8
    assert many.groupby('seg').shap.nunique().max() == 1


class SpaceSensitive:
    "A tokenizer whose ids for a joined text differ from the concatenated ids of its sentences."
    def __init__(self, tok): self._tok = tok
    def __call__(self, texts, *a, **kw):
        fix = lambda t: t.replace('. ', '.. ')
        return self._tok([fix(t) for t in texts] if isinstance(texts, list) else fix(texts), *a, **kw)
    def __getattr__(self, name): return getattr(self._tok, name)
    def __len__(self): return len(self._tok)


def test_fallback_when_token_ids_do_not_concatenate(tiny, tok):
    m = TextRegressor(tiny.encoder, SpaceSensitive(tok), max_length=64, target_mean=6.0, target_std=0.7)
    m.head.load_state_dict(tiny.head.state_dict()); m.eval()
    cap = 'The image is dark. Cool blue tones dominate. No faces are visible.'
    seqs, index, n_fallback = coalition_inputs(m.tokenizer, [split_segments(cap)], 64)
    assert n_fallback == 1
    seg = explain_segments(m, [cap], progress=False)
    parts = split_segments(cap)
    v = lambda S: m.predict([' '.join(parts[i] for i in sorted(S))])[0]
    np.testing.assert_allclose(seg.shap.to_numpy(), shapley_bruteforce(v, 3), atol=1e-4)


def test_tokens_round_trip(tiny):
    import shap
    caps = ['The image is dark. No faces are visible.', 'It is black and white.']
    exp = explain_tokens(tiny, caps, max_evals=40)
    df = tokens_frame(exp, ['x', 'y'])
    sums = df.groupby('id', sort=False).apply(lambda g: g.shap.sum() + g.base.iloc[0]).to_numpy()
    np.testing.assert_allclose(sums, tiny.predict(caps), atol=1e-4)
    back = tokens_to_explanation(df)
    assert list(back[1].data) == list(exp[1].data)
    assert 'black' in shap.plots.text(back[1], display=False)


def test_factors_group_equivalent_phrases():
    texts = ['The image is dark and low-key.']*10 + ['The image is bright and high-key.']*10 + ['It is black and white.']*5 + ['A unicorn.']
    ids = list(range(26))
    fac = find_factors(texts, ids, min_prevalence=0.1)
    # 'image' and 'key' mark the same 20 segments: one coarser factor; the unicorn is below 10% prevalence
    assert set(fac.factor) == {'image dark low key', 'image bright high key', 'black white', 'image key'}
    memb = factor_membership(texts, fac)
    assert set(memb[memb.factor == 'image key'].row) == set(range(20))
    assert normalise('No faces are visible.') == ['no', 'face', 'visible']


def test_factor_stats_ci():
    r = np.random.default_rng(0)
    C = pd.DataFrame({'pos': 0.5 + 0.2*r.normal(size=300), 'zero': 0.2*r.normal(size=300)})
    st = factor_stats(C, 1000, seed=1).set_index('factor')
    assert st.ci_lo['pos'] < 0.5 < st.ci_hi['pos'] and st.ci_lo['pos'] > 0.4
    assert st.ci_lo['zero'] < 0 < st.ci_hi['zero'] and not st.ci_excludes_0['zero']


def test_relative_shap_sums_to_distance_from_mean_prediction():
    seg = pd.DataFrame({'id': ['a', 'a', 'b', 'b', 'b'], 'shap': [1., 2, 0, 0, 1], 'base': 5.0, 'pred': [8., 8, 6, 6, 6]})
    rel = relative_shap(seg)
    sums = rel.groupby(seg.id).sum()
    np.testing.assert_allclose(sums.to_numpy(), [8 - 7, 6 - 7])
    np.testing.assert_allclose(rel.iloc[0] - rel.iloc[1], -1.0)      # differences between segments unchanged


def test_flag_significant_uses_the_null():
    st = pd.DataFrame({'factor': ['big', 'small', 'wide'], 'mean_shap': [0.5, 0.05, 0.6], 'ci_excludes_0': [True, True, False]})
    null = pd.DataFrame({'permutation': [0, 0, 1, 1], 'factor': ['big', 'small']*2, 'n': 10, 'mean_shap': [0.1, -0.1, 0.08, 0.02],
                         'ci_lo': 0.0, 'ci_hi': 0.2, 'ci_excludes_0': [True, True, False, True]})
    out, check = flag_significant(st, null)
    assert out.significant.tolist() == [True, False, False]
    assert check['chance_ci_excludes_0'] == [2, 1] and check['significant'] == 1
    out0, check0 = flag_significant(st, null.iloc[:0])
    assert out0.significant.tolist() == [True, True, False] and check0['n_permutations'] == 0


def test_planted_effects_are_recovered(tok):
    "A known linear model of the words (the planted effects, split between present and absent words) is recovered."
    toy = toy_captions(120, seed=2)
    ww = WordWeights(tok, {'dark': .3, 'bright': -.3, 'cool': .2, 'warm': -.2, 'black': .5, 'busy': -.35, 'minimal': .35,
                           'large': -.15, 'little': .15}, bias=6.0)
    seg = explain_segments(ww, toy.caption, ids=toy.id, progress=False)
    fac = find_factors(seg.text, seg.id)
    fac = fac.merge(factor_stats(factor_contributions(seg, fac), 300), on='factor')
    rec = planted_recovery(fac, TRUTH)
    assert rec.sign_ok.all()
    np.testing.assert_allclose(rec.difference.to_numpy()[[0, 1, 3, 4]], [0.6, 0.4, -0.7, -0.3], atol=1e-5)
    s = recovery_summary(rec)
    assert s['found'] == 5 and s['sign_agreement'] == 1.0 and s['spearman_abs'] > 0.99
    # a model of the wrong sign fails the check
    bad = WordWeights(tok, {'dark': -.3, 'bright': .3}, bias=6.0)
    sb = explain_segments(bad, toy.caption, ids=toy.id, progress=False)
    fb = fac[['factor', 'phrases']].merge(factor_stats(factor_contributions(sb, fac), 100), on='factor')
    assert not planted_recovery(fb, TRUTH).sign_ok.iloc[0]


def test_permutation_null_with_a_refitted_word_model(tok):
    from sklearn.linear_model import Ridge
    words = ['dark', 'bright', 'cool', 'warm', 'black', 'busy', 'minimal']
    wid = [tok.convert_tokens_to_ids(w) for w in words]
    def fit(tr, ytr, va, yva):
        X = np.array([[ids.count(j) for j in wid] for ids in tok(list(tr))['input_ids']], float)
        r = Ridge(alpha=1.0).fit(X, ytr)
        return WordWeights(tok, dict(zip(words, r.coef_)), bias=r.intercept_)
    toy = toy_captions(160, seed=4)
    real = fit(toy.caption, toy.target.to_numpy(), None, None)
    seg = explain_segments(real, toy.caption, ids=toy.id, progress=False)
    fac = find_factors(seg.text, seg.id)
    st = factor_stats(factor_contributions(seg, fac), 200)
    null = null_factor_stats(fit, toy.caption, toy.target.to_numpy(), fac, np.arange(120), np.arange(120, 160), n_permutations=3)
    flagged, check = flag_significant(st, null)
    sig = flagged.set_index('factor').significant
    assert sig[[f for f in sig.index if f.startswith('image dark')]].all()
    assert not sig[[f for f in sig.index if 'face' in f]].any()
    assert check['n_permutations'] == 3


@pytest.mark.slow
def test_stage_explain_smoke(tmp_path):
    cfg = load_settings('smoke', {'runs_dir': str(tmp_path/'runs'), 'fold_subset': 'all', 'token_max_evals': 60})
    factors = run_stage(cfg, 'explain', progress=False)
    E = artifact(cfg, 'explain', 'summary.json').parent
    s = read_json(E/'summary.json')
    assert s['out_of_fold'] and s['n_captions'] == len(read_parquet(E/'segments.parquet').id.unique())
    assert list(factors.columns[:8]) == ['factor', 'n', 'prevalence', 'mean_shap', 'ci_lo', 'ci_hi', 'direction', 'significant']
    assert s['permutation']['n_permutations'] == cfg.n_permutations and s['planted']['effects'] == 5
    assert len(read_parquet(E/'tokens.parquet').id.unique()) == cfg.explain_examples
    assert (E/'stage.json').exists()
