"""Known-answer benchmark of the verify stage: planted predicates verified with the planted sign, unplanted ones not
verified, and the coverage of the planted coefficients by the 95% intervals of the image-based effects.

    .venv/bin/python bench/verify.py [--seeds 10] [--n 400] [--flips 0 0.1 0.2] [--gold 0.2] [--smoke]

Procedure (printed again with the figures). For each seed, `--n` synthetic posters of the known-answer generator
(seed = the seed; outcome = 6 + 0.6 dark + 0.4 cool + 0.5 bw - 0.7 cluttered - 0.3 big title + N(0, 0.5^2)) are
drawn as PNG files. Ten yes/no predicates are asked about every poster through the real client path of the verify
stage (`GeminiVerifier` and `ask_images`: google-genai on the wire, one structured request per image with a
`responseSchema`) against the local fake Gemini server, which answers from the posters' planted attributes by the
words of each question and flips a share `--flips` of the answers (per image and question):

- 5 planted predicates, one per attribute, each worded at random (per seed) from several wordings, half of them
  asking about the absent side ("Is the poster bright and high-key?": planted sign reversed);
- 5 unplanted predicates about things the generator does not vary with the outcome (a face, a border, a person...),
  which the fake answers with a stable coin per image.

The outcome is regressed on each answer on the held-out rows of 5 folds (`image_effects`: OLS with HC3 per fold,
inverse-variance combined), Benjamini-Hochberg across the 10 predicates at 0.05 (`bh_adjust`). The caption-based
sign that verification must match is the planted sign for planted predicates and a coin per seed for unplanted
ones. A planted predicate counts when it is verified with the planted sign; an unplanted one is counted when it is
verified, and also when it is significant in either direction. Coverage: share of planted predicates whose 95%
interval holds the planted coefficient (signed by the wording). With `--gold`, a random share of the rows gets the
true answer as a human label and `dsl_ols` corrects the estimates (coverage of its intervals printed beside).
"""
import argparse, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
sys.path.insert(0, str(ROOT/'bench'))
from _results import write_result  # noqa: E402

WORDINGS = {   # attribute: [(question, +1 when "yes" means present, -1 when it means absent)]
    'dark': [('Is the poster dark and dimly lit?', 1), ('Is the image low-key, with deep shadows?', 1),
             ('Is the poster bright and high-key?', -1), ('Is the background pale and well lit?', -1)],
    'cool': [('Do cool blue tones dominate the image?', 1), ('Is the colour palette bluish and cold?', 1),
             ('Do warm red or orange tones dominate?', -1), ('Is the palette warm and reddish?', -1)],
    'bw': [('Is the image in black and white?', 1), ('Is the poster monochrome, in shades of grey?', 1),
           ('Is the poster printed in vivid colours?', -1), ('Is the image colourful?', -1)],
    'cluttered': [('Is the poster busy and cluttered?', 1), ('Is the layout crowded with many shapes?', 1),
                  ('Is the design clean and minimal?', -1), ('Does the poster show a single subject on a sparse background?', -1)],
    'big_title': [('Is the title set in large bold text?', 1), ('Does a big title dominate the poster?', 1),
                  ('Is the title written in small text?', -1), ('Is the title lettering tiny?', -1)],
}
UNPLANTED = ['Is there a human face on the poster?', 'Is there a border around the image?', 'Does the poster show a person?',
             'Is there a vehicle in the picture?', 'Does the image contain a tagline under the title?']


def run_one(seed:int, n:int, flip:float, gold:float, folder:Path) -> pd.DataFrame:
    "One data set and flip rate: one row per predicate (planted sign, coefficient, effect, interval, q, verified, DSL)."
    from fake_gemini import FakeGemini, synth_attributes
    from posterlens.caption import CaptionCache
    from posterlens.data import EFFECTS, make_synth
    from posterlens.explain import bh_adjust
    from posterlens.model import make_folds
    from posterlens.verify import GeminiVerifier, answer_matrix, ask_images, dsl_ols, image_effects
    from scipy.stats import norm
    csv = make_synth(folder/f'n{n}-s{seed}', n, seed)
    syn = pd.read_csv(csv)
    paths = [str(csv.parent/p) for p in syn.image]
    rng = np.random.default_rng([seed, 7])
    coef = {e['attribute']: e['coef'] for e in EFFECTS}
    rows = []
    for a, ws in WORDINGS.items():
        q, s = ws[rng.integers(len(ws))]
        rows.append({'question': q, 'attribute': a, 'planted': True, 'coef': s*coef[a], 'caption_sign': np.sign(s*coef[a])})
    for q in UNPLANTED: rows.append({'question': q, 'attribute': None, 'planted': False, 'coef': 0.0, 'caption_sign': rng.choice([-1.0, 1.0])})
    P = pd.DataFrame(rows).assign(pid=[f'p{i+1:02d}' for i in range(len(rows))])
    with FakeGemini(attributes=synth_attributes(csv.parent), flip=flip, seed=seed) as g, tempfile.TemporaryDirectory() as tmp:
        os.environ['GOOGLE_GEMINI_BASE_URL'] = g.url
        answers, _ = ask_images(GeminiVerifier(temperature=0.0, thinking_budget=0), paths, syn.id, P.rename(columns={'question': 'predicate'}),
                                CaptionCache(Path(tmp)/'cache'), concurrency=8, max_retries=2, progress=False)
    A = answer_matrix(answers, syn.id, P.pid)
    held = np.zeros(n, int)
    for k, (_, va) in enumerate(make_folds(n, 5, 42)): held[va] = k
    y = syn.target.to_numpy(float)
    E = image_effects(A, y, held).set_index('factor')
    P['effect'] = P.pid.map(E.effect); P['lo'] = P.pid.map(E.effect_lo); P['hi'] = P.pid.map(E.effect_hi); P['p'] = P.pid.map(E.p)
    P['q'] = bh_adjust(P.p)
    P['significant'] = P.q <= 0.05
    P['verified'] = P.significant & (np.sign(P.effect) == P.caption_sign)
    P['covered'] = (P.lo <= P.coef) & (P.coef <= P.hi)
    P['answered'] = [int(A[p].notna().sum()) for p in P.pid]
    if gold:
        R = np.random.default_rng([seed, 11]).random(n) < gold
        for i, r in P[P.planted].iterrows():
            truth = syn[r.attribute].to_numpy(float) if r.coef*coef[r.attribute] > 0 else 1 - syn[r.attribute].to_numpy(float)
            b, se = dsl_ols(y, A[r.pid].to_numpy(float), np.where(R, truth, np.nan))
            P.loc[i, 'dsl_covered'] = (b - norm.ppf(0.975)*se <= r.coef <= b + norm.ppf(0.975)*se)
    return P.assign(seed=seed, flip=flip)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, default=10); ap.add_argument('--n', type=int, default=400)
    ap.add_argument('--flips', type=float, nargs='+', default=[0.0, 0.1, 0.2])
    ap.add_argument('--gold', type=float, default=0.2, help='share of rows with a human label for the DSL correction (0: off)')
    ap.add_argument('--smoke', action='store_true', help='2 seeds of 60 posters at 0 and 20%% flips: checks the path in seconds (too few posters for the targets)')
    a = ap.parse_args(argv)
    if a.smoke: a.seeds, a.n, a.flips = 2, 60, [0.0, 0.2]
    for k in ('GOOGLE_GENAI_USE_VERTEXAI', 'GOOGLE_GENAI_USE_ENTERPRISE', 'GOOGLE_API_KEY'): os.environ.pop(k, None)
    os.environ['GEMINI_API_KEY'] = 'bench-key'
    os.environ['TQDM_DISABLE'] = '1'
    folder = ROOT/'.cache'/'bench'/'verify'
    t0, parts = time.perf_counter(), []
    for flip in a.flips:
        for s in range(a.seeds): parts.append(run_one(s, a.n, flip, a.gold, folder))
    R = pd.concat(parts, ignore_index=True)
    print(f"verify benchmark: {a.seeds} seeds x {a.n} posters, flips {a.flips}, 5 planted + 5 unplanted predicates, BH at 0.05"
          + (f", gold labels on {a.gold:.0%} of the rows" if a.gold else '') + f"; {time.perf_counter() - t0:.0f} s")
    cols = ['flips', 'all 5 planted verified (seeds)', 'planted verified', 'no unplanted verified (seeds)',
            'no unplanted significant (seeds)', 'coverage', 'DSL coverage', 'answered']
    figures, lines = {}, []
    for flip, g in R.groupby('flip'):
        per, pl = g.groupby('seed'), g[g.planted]
        f = {'seeds_all_planted_verified': sum(int(x[x.planted].verified.all()) for _, x in per),
             'planted_verified': int(pl.verified.sum()), 'planted': len(pl),
             'seeds_no_unplanted_verified': sum(int(not x[~x.planted].verified.any()) for _, x in per),
             'seeds_no_unplanted_significant': sum(int(not x[~x.planted].significant.any()) for _, x in per),
             'coverage': float(pl.covered.mean()),
             'dsl_coverage': float(pl.dsl_covered.mean()) if 'dsl_covered' in pl and pl.dsl_covered.notna().any() else None,
             'answered': float(g.answered.mean()/a.n),
             'effect_over_coef': pl.assign(r=pl.effect/pl.coef).groupby('attribute').r.mean().round(3).to_dict()}
        figures[f'{flip:g}'] = f
        lines.append([f'{flip:.0%}', f"{f['seeds_all_planted_verified']}/{a.seeds}", f"{f['planted_verified']}/{f['planted']}",
                      f"{f['seeds_no_unplanted_verified']}/{a.seeds}", f"{f['seeds_no_unplanted_significant']}/{a.seeds}",
                      f"{f['coverage']:.0%}", 'n/a' if f['dsl_coverage'] is None else f"{f['dsl_coverage']:.0%}", f"{f['answered']:.0%}"])
    print(pd.DataFrame(lines, columns=cols).to_string(index=False))
    print("\nmean image-based effect / planted coefficient (attenuation by flipped answers), per attribute and flip rate:")
    print(R[R.planted].assign(ratio=lambda d: d.effect/d.coef).pivot_table(index='attribute', columns='flip', values='ratio',
                                                                            aggfunc='mean').round(2).to_string())
    f10, f0 = figures.get('0.1'), figures.get('0')
    checks = []
    if f10: checks += [('all 5 planted verified with the planted sign at 10% flips (seeds; target >= 9 of 10)',
                        f"{f10['seeds_all_planted_verified']}/{a.seeds}", f10['seeds_all_planted_verified'] >= 0.9*a.seeds),
                       ('no unplanted predicate verified at 10% flips (seeds; target >= 9 of 10)',
                        f"{f10['seeds_no_unplanted_verified']}/{a.seeds}", f10['seeds_no_unplanted_verified'] >= 0.9*a.seeds)]
    if f0: checks.append(('95% intervals covering the planted coefficient at 0% flips (target >= 85%)', f"{f0['coverage']:.0%}",
                          f0['coverage'] >= 0.85))
    for fl, f in figures.items():
        if fl != '0': checks.append((f'coverage at {float(fl):.0%} flips (no target; DSL-corrected with gold labels: '
                                     f"{'n/a' if f['dsl_coverage'] is None else format(f['dsl_coverage'], '.0%')})", f"{f['coverage']:.0%}", None))
    print()
    for name, val, ok in checks: print(f"{name}: {val}" + ('' if ok is None else ' PASS' if ok else ' FAIL'))
    passed = all(ok is not False for _, _, ok in checks)
    write_result('verify', {'seeds': a.seeds, 'n': a.n, 'flips': a.flips, 'gold': a.gold, 'by_flip': figures, 'pass': passed},
                 [(name, val) for name, val, _ in checks], smoke=a.smoke)
    return 0 if passed or a.smoke else 1


if __name__ == '__main__': sys.exit(main())