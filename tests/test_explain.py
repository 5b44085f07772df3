"Tests of posterlens.explain: exact segment Shapley values, factors, their held-out tests, planted-effect recovery."
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
                                factor_membership, factor_contributions, factor_stats, relative_shap, planted_recovery,
                                recovery_summary, WordWeights, merge_factors, caption_matrix, relations,
                                select_factors, heldout_effects, combine_folds, bh_adjust, crossfit_factors, unplanted_flagged,
                                crossfit_concepts, concept_tree, sentence_embeddings, FACTOR_COLUMNS, CONCEPT_COLUMNS)
from posterlens.pipeline import artifact, run_stage

TRUTH = {'effects': [{'attribute': 'dark', 'coef': 0.6, 'present_phrase': 'dark', 'absent_phrase': 'bright'},
                     {'attribute': 'cool', 'coef': 0.4, 'present_phrase': 'cool', 'absent_phrase': 'warm'},
                     {'attribute': 'bw', 'coef': 0.5, 'present_phrase': 'black and white', 'absent_phrase': 'colour'},
                     {'attribute': 'cluttered', 'coef': -0.7, 'present_phrase': 'cluttered', 'absent_phrase': 'clean'},
                     {'attribute': 'big_title', 'coef': -0.3, 'present_phrase': 'large bold text', 'absent_phrase': 'small text'}]}


@pytest.fixture(scope='session')
def tok():
    return AutoTokenizer.from_pretrained(resolve_text_model('minilm'))


@pytest.fixture(scope='session')
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


def test_bh_adjust_matches_the_step_up_rule():
    p = np.random.default_rng(3).uniform(size=40)**3
    m, order = len(p), np.argsort(p)
    q_sorted = np.minimum.accumulate((p[order]*m/np.arange(1, m + 1))[::-1])[::-1]
    q = np.empty(m); q[order] = np.minimum(q_sorted, 1)
    np.testing.assert_allclose(bh_adjust(p), q, atol=1e-12)
    k = int((q <= 0.05).sum())           # the flagged set: the k smallest p-values, k the largest i with p_(i) <= 0.05 i / m
    assert k == max([i for i in range(1, m + 1) if np.sort(p)[i - 1] <= 0.05*i/m], default=0)


def test_heldout_effects_test_parts_beyond_their_parent():
    "A sub-type without an effect of its own is not credited with its parent's effect; alternatives are not controls."
    g = np.random.default_rng(1)
    n = 800
    big = (g.random(n) < 0.5).astype(float)
    top = big*(g.random(n) < 0.6)                         # 'image top': always with 'large bold text'
    small = 1 - big                                        # its alternative
    y = 6 - 0.3*big + g.normal(0, 0.5, n)
    X = pd.DataFrame({'large bold text': big, 'image top': top, 'small text': small})
    e = heldout_effects(y, X, relations(X)).set_index('factor')
    assert abs(e.effect['image top']) < 3*e.se['image top']                       # beyond its parent: nothing
    assert abs(e.effect['large bold text'] + 0.3) < 3*e.se['large bold text']
    assert e.effect['small text'] > 0 and e.controls['small text'] == 0
    # without the parent as a control, the part borrows the parent's effect (what the old factor table showed)
    alone = heldout_effects(y, X[['image top']], relations(X[['image top']])).set_index('factor')
    assert alone.effect['image top'] < -3*alone.se['image top']
    # tested alone, with the broader phrases passed as parents (as each fold tests its chosen factors): the parent is its control
    sub = heldout_effects(y, X[['image top']], relations(X), parents=X).set_index('factor')
    assert sub.controls['image top'] == 1 and abs(sub.effect['image top']) < 3*sub.se['image top']


def test_heldout_effects_standard_errors_are_hc3():
    "The effect is the OLS coefficient and its standard error HC3's, computed here from the formula (they differ from the classical one on these data)."
    g = np.random.default_rng(5)
    n = 120
    x = (g.random(n) < 0.25).astype(float)
    y = 1 + 0.5*x + g.normal(0, 1, n)*np.where(x > 0, 2.0, 0.3)          # noisier where the factor is mentioned
    X = pd.DataFrame({'a': x})
    e = heldout_effects(y, X, relations(X)).set_index('factor')
    A = np.column_stack([x, np.ones(n)])
    B = np.linalg.inv(A.T @ A)
    beta = B @ A.T @ y
    r, h = y - A @ beta, np.einsum('ij,jk,ik->i', A, B, A)
    hc3 = np.sqrt((B @ (A.T*(r/(1 - h))**2) @ A @ B)[0, 0])
    classical = np.sqrt(r @ r/(n - 2)*B[0, 0])
    assert abs(hc3 - classical) > 0.2*hc3
    assert abs(e.effect['a'] - beta[0]) < 1e-10 and abs(e.se['a'] - hc3) < 1e-10
    assert (e.n['a'], e.rows['a'], e.controls['a']) == (int(x.sum()), n, 0)


def test_combine_folds_is_inverse_variance_weighted():
    per = pd.DataFrame({'factor': ['a']*3 + ['b'], 'effect': [1.0, 0.5, 2.0, -1.0], 'se': [0.5, 1.0, 2.0, 0.1], 'rows': 10})
    c = combine_folds(per).set_index('factor')
    w = np.array([4.0, 1.0, 0.25])
    assert abs(c.effect['a'] - (w @ [1.0, 0.5, 2.0])/w.sum()) < 1e-12 and abs(c.se['a'] - 1/np.sqrt(w.sum())) < 1e-12
    assert c.tested_folds['a'] == 3 and c.tested_rows['a'] == 30 and c.p['b'] < 1e-10


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


def _crossfit_words(tok, df, y, k=3, **kw):
    from posterlens.model import make_folds
    parts, held = [], np.full(len(df), -1)
    for j, (tr, va) in enumerate(make_folds(len(df), k, 0)):
        m = WordWeights.fit(tok, df.caption.iloc[tr], y[tr])
        parts.append(explain_segments(m, df.caption.iloc[va].tolist(), ids=df.id.iloc[va].tolist(), progress=False).assign(fold=j))
        held[va] = j
    return crossfit_factors(pd.concat(parts, ignore_index=True), df[['id', 'caption']].assign(target=y, heldout=held), **kw)


def test_crossfit_factors_finds_planted_and_flags_nothing_without_a_model(tok):
    toy = toy_captions(300, seed=11)
    fac, tests, s = _crossfit_words(tok, toy, toy.target.to_numpy())
    assert list(fac.columns) == FACTOR_COLUMNS and set(tests.fold) == {0, 1, 2}
    rec = planted_recovery(fac, TRUTH).set_index('attribute')
    assert rec.recovered[['dark', 'cluttered', 'big_title']].all() and rec.flagged_wrong.sum() == 0
    assert unplanted_flagged(fac, TRUTH) == [] and len(fac) <= 12
    # flagged exactly when q <= the level, and the q-values are BH of the p-values
    np.testing.assert_allclose(fac.q, bh_adjust(fac.p))
    assert fac.significant.tolist() == (fac.q <= 0.05).tolist()
    # a model that does not beat the mean: same tests, nothing flagged, and the summary says why
    f0, _, s0 = _crossfit_words(tok, toy, toy.target.to_numpy(), beats_mean=False)
    assert f0.significant.sum() == 0 and s0['q_below_level'] == s['q_below_level'] > 0
    assert 'does not predict the outcome better than the mean' in s0['statement']


# Captions that say two planted attributes in several wordings each (not the notebook's), in random order, sometimes
# not at all, with a filler sentence that carries nothing.
WORDINGS = {'night': ['The scene is steeped in darkness.', 'Heavy shadow swallows most of the picture.',
                      'A murky, dim light hangs over it.'],
            'day': ['Bright light floods the picture.', 'The scene glows in clear sunshine.',
                    'Everything is lit up and radiant.'],
            'crowd': ['Dozens of people fill every corner.', 'A packed crowd surrounds the hero.',
                      'Many faces are crammed into the frame.'],
            'alone': ['One lone person stands in the middle.', 'A single character is shown by himself.',
                      'Only one individual appears.'],
            'filler': ['A road curves into the distance.', 'The poster has a matte finish.',
                       'There is a hint of motion.', 'A door stands half open.']}


def paraphrased(n, seed):
    g = np.random.default_rng(seed)
    night, crowd = g.random(n) < 0.5, g.random(n) < 0.4
    say = lambda side: [g.choice(WORDINGS[side])] if g.random() > 0.1 else []
    caps = [' '.join(g.permutation(say('night' if a else 'day') + say('crowd' if b else 'alone') + [g.choice(WORDINGS['filler'])]))
            for a, b in zip(night, crowd)]
    y = 6 + 0.6*night - 0.5*crowd + g.normal(0, 0.5, n)
    return pd.DataFrame({'id': [f'p{i}' for i in range(n)], 'caption': caps}), y


def _crossfit_concepts(tok, df, y, y_test=None, k=3, **kw):
    "Word models fitted on `y`, held-out tests on `y_test` (default `y`)."
    from posterlens.model import make_folds
    parts, held = [], np.full(len(df), -1)
    for j, (tr, va) in enumerate(make_folds(len(df), k, 0)):
        m = WordWeights.fit(tok, df.caption.iloc[tr], y[tr])
        parts.append(explain_segments(m, df.caption.iloc[va].tolist(), ids=df.id.iloc[va].tolist(), progress=False).assign(fold=j))
        held[va] = j
    kw.setdefault('beats_mean', True)
    rows = df[['id', 'caption']].assign(target=y if y_test is None else y_test, heldout=held)
    return crossfit_concepts(pd.concat(parts, ignore_index=True), rows, **kw)


@pytest.fixture(scope='session')
def para():
    return paraphrased(300, seed=5)


def test_concepts_group_wordings_and_flag_each_side_with_its_sign(tok, para):
    df, y = para
    fac, tests, s = _crossfit_concepts(tok, df, y)
    assert list(fac.columns) == CONCEPT_COLUMNS and s['units'] == 'concepts' and fac.versus.isna().all()
    side = {t: k for k, ws in WORDINGS.items() for t in ws}
    flagged = [(sorted({side[t] for t in r.sentences}), r.effect) for r in fac[fac.significant].itertuples()]
    assert all(len(sides) == 1 and sides[0] != 'filler' for sides, _ in flagged), flagged   # one side, never filler
    found = {sides[0] for sides, _ in flagged}
    assert found & {'night', 'day'} and found & {'crowd', 'alone'}, flagged                   # both attributes
    up = {'night', 'alone'}
    assert all((e > 0) == (sides[0] in up) for sides, e in flagged), flagged                 # with the planted sign
    several = [r for r in fac[fac.significant].itertuples() if len(r.sentences) > 1]
    assert several, 'no flagged concept groups two wordings'
    assert (fac.name.map(lambda n: n in side)).all()                                          # named by one of its segments
    np.testing.assert_allclose(fac.q, bh_adjust(fac.p))


PALETTE = {'warm': ['Reds and oranges fill the poster.', 'The palette is warm and fiery.', 'Everything glows amber.'],
           'cool': ['Blues and greens fill the poster.', 'The palette is cool and icy.', 'Everything glows teal.'],
           'grey': ['Greys and blacks fill the poster.', 'The palette is colourless and grey.', 'Everything is monochrome.'],
           'filler': ['A road curves into the distance.', 'The poster has a matte finish.', 'There is a hint of motion.',
                      'A door stands half open.']}


def test_three_levels_of_one_topic_stay_apart(tok):
    "A palette said in every caption with three levels (warm 0, cool +0.4, grey +1.0): cool and grey are separate concepts."
    g = np.random.default_rng(8)
    n = 360
    level = g.choice(['warm', 'cool', 'grey'], size=n, p=[0.4, 0.4, 0.2])
    caps = [' '.join(g.permutation([g.choice(PALETTE[v]), g.choice(PALETTE['filler'])])) for v in level]
    y = 6 + 0.4*(level == 'cool') + 1.0*(level == 'grey') + g.normal(0, 0.4, n)
    df = pd.DataFrame({'id': [f'q{i}' for i in range(n)], 'caption': caps})
    fac, _, _ = _crossfit_concepts(tok, df, y)
    side = {t: k for k, ws in PALETTE.items() for t in ws}
    flagged = [sorted({side[t] for t in r.sentences}) for r in fac[fac.significant].itertuples()]
    assert all(len(f) == 1 for f in flagged), flagged                    # no flagged concept mixes two levels
    assert ['grey'] in flagged and (['cool'] in flagged or ['warm'] in flagged), flagged


def test_concepts_flag_nothing_on_shuffled_outcomes(tok, para):
    df, y = para
    _, _, s = _crossfit_concepts(tok, df, np.random.default_rng(1).permutation(y))
    assert s['significant'] == 0


def test_segments_said_together_never_share_a_topic():
    "Sentences built on one template are all alike to the encoder; only what a caption says together tells lighting from company."
    light = ['The picture is dark.', 'The picture is bright.', 'The picture is gloomy.', 'The picture is sunny.']
    company = ['The picture is crowded.', 'The picture is empty.', 'The picture is busy.', 'The picture is lonely.']
    texts = light + company
    g = np.random.default_rng(0)
    said = np.zeros((len(texts), 200))
    for c in range(200):                                          # each caption: one lighting and one company sentence
        said[g.integers(4), c] = said[4 + g.integers(4), c] = 1
    E = sentence_embeddings(texts)
    assert (E[:4] @ E[4:].T).min() > 0.3                          # the encoder alone would merge them
    groups = concept_tree(E, said)
    assert all(set(grp) <= {0, 1, 2, 3} or set(grp) <= {4, 5, 6, 7} for grp in groups), groups
    assert any(set(grp) == {0, 1, 2, 3} for grp in groups) and any(set(grp) == {4, 5, 6, 7} for grp in groups), groups



def test_rare_wordings_said_together_stay_apart():
    "Two wordings each in a few captions: sharing 2 captions where 2 are expected by chance keeps them apart; sharing none, they merge."
    texts = ['The poster is black-and-white.', 'A dark, shadow-heavy image.', 'It is printed in monochrome.']
    said = np.zeros((3, 400))
    said[0, :20] = 1                                   # black and white: 20 captions
    said[1, 18:58] = 1                                 # dark: 40 captions, 2 of them with black and white (20*40/400 = 2 expected)
    said[2, 300:320] = 1                               # monochrome: 20 captions, never with black and white (1 expected)
    E = sentence_embeddings(texts)
    assert E[0] @ E[1] > 0.3                           # the encoder alone would merge black and white with dark
    groups = [set(g) for g in concept_tree(E[:2], said[:2])]
    assert {0, 1} not in groups, groups
    assert {0, 1} in [set(g) for g in concept_tree(E[[0, 2]], said[[0, 2]])]

def test_concept_folds_are_tested_on_exactly_their_heldout_rows(tok, para):
    from posterlens.model import make_folds
    df, y = para
    folds = make_folds(len(df), 3, 0)
    _, tests, s = _crossfit_concepts(tok, df, y)
    assert {k: set(g.rows) for k, g in tests.groupby('fold')} == {j: {len(va)} for j, (tr, va) in enumerate(folds)}
    assert s['heldout_rows'] == len(df)
    # other outcomes for fold 1's held-out rows only (the models are unchanged): only fold 1's tests change
    y2, v1 = y.copy(), folds[1][1]
    y2[v1] = np.random.default_rng(0).permutation(y[v1])
    _, tests2, _ = _crossfit_concepts(tok, df, y, y_test=y2)
    per = lambda t, k: t[t.fold == k].set_index('factor')[['effect', 'se']]
    for k in (0, 2): pd.testing.assert_frame_equal(per(tests, k), per(tests2, k))
    assert not np.allclose(per(tests, 1).effect, per(tests2, 1).reindex(per(tests, 1).index).effect)


def test_a_concept_is_flagged_only_in_the_direction_its_models_gave_it(tok, para):
    "Held-out outcomes that run against the fold models: the tests are as strong, and nothing is flagged."
    df, y = para
    fac, _, s = _crossfit_concepts(tok, df, y, y_test=12 - y)
    assert s['q_below_level'] > 0 and s['significant'] == 0 and not fac.significant.any()
    assert ((fac.q <= 0.05) & (np.sign(fac.effect) != np.sign(fac.mean_shap))).any()   # against the credit the models gave


def test_flagging_is_exactly_q_at_most_the_level(tok):
    "Flagged exactly when q <= fdr and the model beats the mean, on data where a factor has p < fdr < q."
    toy = toy_captions(200, seed=3)
    y = toy.target.to_numpy() + np.random.default_rng(3).normal(0, 0.5, len(toy))
    fac, _, s = _crossfit_words(tok, toy, y)
    assert ((fac.p < 0.05) & (fac.q > 0.05)).any() and (fac.q <= 0.05).any()    # the data tell q from p
    assert fac.significant.tolist() == (fac.q <= 0.05).tolist()
    assert s['significant'] == s['q_below_level'] == int((fac.q <= 0.05).sum())
    f10, _, _ = _crossfit_words(tok, toy, y, fdr=0.1)                              # the level is the setting's
    assert f10.significant.tolist() == (f10.q <= 0.1).tolist() and f10.significant.sum() > fac.significant.sum()
    for bm in (False, None):                                                       # not better than the mean, or unknown
        f0, _, s0 = _crossfit_words(tok, toy, y, beats_mean=bm)
        assert not f0.significant.any() and s0['significant'] == 0 and s0['q_below_level'] == s['q_below_level'] > 0
        assert 'No factor is flagged' in s0['statement']


def test_each_fold_is_tested_on_exactly_its_heldout_rows(tok):
    "Fold k's factors are tested on fold k's held-out rows: as many rows, and only their outcomes matter."
    from posterlens.model import make_folds
    toy = toy_captions(150, seed=4)
    y, folds = toy.target.to_numpy(), make_folds(len(toy), 3, 0)
    parts, held = [], np.full(len(toy), -1)
    for j, (tr, va) in enumerate(folds):
        m = WordWeights.fit(tok, toy.caption.iloc[tr], y[tr])
        parts.append(explain_segments(m, toy.caption.iloc[va].tolist(), ids=toy.id.iloc[va].tolist(), progress=False).assign(fold=j))
        held[va] = j
    seg, rows = pd.concat(parts, ignore_index=True), toy[['id', 'caption']].assign(target=y, heldout=held)
    _, tests, s = crossfit_factors(seg, rows)
    assert {k: set(g.rows) for k, g in tests.groupby('fold')} == {j: {len(va)} for j, (tr, va) in enumerate(folds)}
    assert s['heldout_rows'] == len(toy)
    # other outcomes for fold 1's held-out rows (shuffled among them): fold 1's tests change, the others' do not
    y2, v1 = y.copy(), folds[1][1]
    y2[v1] = np.random.default_rng(0).permutation(y[v1])
    _, tests2, _ = crossfit_factors(seg, rows.assign(target=y2))
    per = lambda t, k: t[t.fold == k].set_index('factor')[['effect', 'se']]
    for k in (0, 2): pd.testing.assert_frame_equal(per(tests, k), per(tests2, k))
    assert not np.allclose(per(tests, 1).effect, per(tests2, 1).reindex(per(tests, 1).index).effect)


def test_stage_hands_each_fold_its_validation_rows():
    "The explain stage's held-out fold of each row is the fold whose model did not train on it (-1 for folds not run)."
    from fastcore.basics import AttrDict
    from posterlens.explain import _heldout_folds
    from posterlens.model import make_folds
    cfg = AttrDict(folds=3, seed=42)
    held = _heldout_folds(31, cfg, [0, 2])
    for k, (tr, va) in enumerate(make_folds(31, 3, 42)):
        assert (held[va] == (k if k in (0, 2) else -1)).all() and not (held[tr] == k).any()


def test_stage_explains_each_caption_by_the_model_that_did_not_train_on_it(tmp_path):
    "Three fold models that differ only in their output scale (100 k): the explanations and the tests follow the out-of-fold table."
    from posterlens.core import write_json, write_parquet
    from posterlens.explain import stage_explain
    from posterlens.model import make_folds
    toy = toy_captions(45, seed=8)
    cfg = load_settings('smoke', {'runs_dir': str(tmp_path/'runs'), 'folds': 3, 'seed': 42, 'fold_subset': 'all',
                                  'explain_examples': 1, 'token_max_evals': 20, 'use_covariates': False})
    M = tmp_path/'model'
    tiny = tiny_text_model(tmp_path/'tiny')
    for k in range(3): TextRegressor.from_pretrained(tiny, max_length=64, target_mean=100.0*k, target_std=1.0).save(M/f'fold{k}')
    folds = make_folds(len(toy), 3, 42)
    oof = pd.concat([pd.DataFrame({'id': toy.id.iloc[va].astype(str).to_numpy(), 'fold': k}) for k, (tr, va) in enumerate(folds)])
    write_parquet(oof, M/'oof.parquet'); write_json({'folds_run': [0, 1, 2], 'beats_mean': True}, M/'metrics.json')
    stage_explain(cfg, toy, M, tmp_path/'explain', progress=False)
    seg, tests = read_parquet(tmp_path/'explain'/'segments.parquet'), read_parquet(tmp_path/'explain'/'tests.parquet')
    fold_of = dict(zip(oof.id, oof.fold))
    assert (seg.fold == seg.id.astype(str).map(fold_of)).all() and seg.id.nunique() == len(toy)
    assert (np.round(seg.base/100) == seg.fold).all()            # each explained by that fold's model
    assert all(set(g.rows) == {len(folds[k][1])} for k, g in tests.groupby('fold'))


def test_recovery_needs_the_planted_sign_and_a_flag():
    "Recovered = flagged with the planted sign and never with the other: a wrong sign, an unflagged or an unmatched effect is not."
    fac = pd.DataFrame({'factor': ['dark', 'cool', 'black white', 'cluttered', 'face'],
                        'versus': ['bright', 'warm', None, 'clean', None],
                        'phrases': [['dark'], ['cool'], ['black white'], ['cluttered'], ['face']],
                        'versus_phrases': [['bright'], ['warm'], [], ['clean'], []],
                        'n': [50, 40, 30, 45, 20],
                        'effect': [0.5, -0.3, 0.4, -0.6, 0.2],          # cool: the wrong sign (planted +0.4)
                        'significant': [True, True, False, True, True]})  # black and white: right sign, not flagged
    rec = planted_recovery(fac, TRUTH).set_index('attribute')
    assert rec.recovered.to_dict() == {'dark': True, 'cool': False, 'bw': False, 'cluttered': True, 'big_title': False}
    assert rec.sign_ok.to_dict() == {'dark': True, 'cool': False, 'bw': True, 'cluttered': True, 'big_title': None}
    assert rec.flagged_wrong.to_dict() == {'dark': 0, 'cool': 2, 'bw': 0, 'cluttered': 0, 'big_title': 0}   # cool and warm: one row
    np.testing.assert_allclose(rec.difference[['dark', 'cool', 'bw', 'cluttered']], [0.5, -0.3, 0.4, -0.6])
    s = recovery_summary(rec.reset_index())
    assert (s['found'], s['recovered'], s['sign_agreement']) == (4, 2, 0.75)
    assert unplanted_flagged(fac, TRUTH) == ['face']


def test_word_models_are_ridge_fits(tok):
    texts = ['dark poster', 'bright poster', 'dark dark poster', 'bright image']
    y = np.array([1.0, -1.0, 2.0, -1.0])
    m = WordWeights.fit(tok, texts, y, alpha=1e-6)
    np.testing.assert_allclose(m.predict(texts), y, atol=1e-3)


@pytest.mark.slow
def test_stage_explain_smoke(tmp_path):
    "End to end on the smoke variant's synthetic posters (160 of them, the default variant's training): the planted effects are recovered out of fold."
    over = {'runs_dir': str(tmp_path/'runs'), 'cache_dir': str(tmp_path/'cache'), 'fold_subset': 'all', 'synth_n': 160, 'epochs': 3,
            'lr': 3e-4, 'freeze_layers': 4, 'explain_max': 40, 'token_max_evals': 40}
    cfg = load_settings('smoke', over)
    factors = run_stage(cfg, 'explain', progress=False)
    E, M = artifact(cfg, 'explain', 'summary.json').parent, artifact(cfg, 'train', 'metrics.json').parent
    s, seg, oof = read_json(E/'summary.json'), read_parquet(E/'segments.parquet'), read_parquet(M/'oof.parquet')
    assert s['out_of_fold'] and s['n_captions'] == seg.id.nunique() == 40
    assert list(factors.columns) == CONCEPT_COLUMNS and s['planted']['effects'] == 5     # concepts: the default factors
    assert s['validation']['method'] == 'Benjamini-Hochberg' and s['validation']['level'] == cfg.fdr
    # out of fold: each caption explained by the model that did not train on it; each fold tested on its held-out rows
    fold_of = dict(zip(oof.id.astype(str), oof.fold))
    assert (seg.fold == seg.id.astype(str).map(fold_of)).all()
    tests = read_parquet(E/'tests.parquet')
    assert len(tests), 'no fold model proposed a factor'     # a fold whose model proposed none has no tests (40 captions explained)
    assert {k: set(g.rows) for k, g in tests.groupby('fold')} == \
           {k: {n} for k, n in oof.fold.value_counts().items() if k in set(tests.fold)}
    # the model learns these data, so the held-out tests decide: flagged only when q <= fdr (and the sign is the models')
    assert s['beats_mean'] is True, read_json(M/'metrics.json')['vs_mean']
    assert (factors.q[factors.significant] <= cfg.fdr).all() and factors.significant.any()
    assert set(s['factors']['up']) | set(s['factors']['down']) == set(factors.factor[factors.significant])
    # the known answer: the strongest planted effects flagged with their sign, none with the wrong one, nothing unplanted
    rec = read_parquet(E/'planted.parquet').set_index('attribute')
    assert rec.recovered[['dark', 'cluttered']].all() and s['planted']['recovered'] >= 3
    assert rec.flagged_wrong.sum() == 0 and s['planted']['unplanted_flagged'] == []
    assert len(read_parquet(E/'tokens.parquet').id.unique()) == cfg.explain_examples
    assert (E/'stage.json').exists()
    # another false discovery rate reruns the stage but reuses each fold's segment values (same models, same captions)
    before = {f.name: f.stat().st_mtime_ns for f in (E/'parts').glob('fold*.parquet')}
    f10 = run_stage(load_settings('smoke', {**over, 'fdr': 0.1}), 'explain', progress=False)
    assert {f.name: f.stat().st_mtime_ns for f in (E/'parts').glob('fold*.parquet')} == before and len(before) >= 1
    assert read_json(E/'summary.json')['validation']['level'] == 0.1 and f10.significant.sum() >= factors.significant.sum()
