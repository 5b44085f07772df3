"""Validity of the reported factors: are planted attributes found with the right sign, are unplanted factors
flagged, and is anything flagged when the outcome is shuffled? Two models, side by side.

    .venv/bin/python bench/validity.py [--model ridge|default|both] [--seeds 10] [--first-seed 0] [--n 400] [--folds 5]
                                       [--alpha 1.0] [--fdr 0.05] [--real ../shared/data/posters-sample] [--smoke]

`--model default` (the real procedure): for each seed, the `default` variant itself through posterlens' pipeline
(`run_stages`: data, caption, train, explain): synthetic posters drawn with the seed, the offline describer, the
fine-tuned MiniLM regressor on the variant's folds, exact sentence Shapley values of each fold model on its held-out
captions, the factors each fold model suggests tested on the rows it did not train on (HC3, Benjamini-Hochberg), the
"does the model beat the mean?" gate. Then the same run on a CSV of the same posters with the targets shuffled
(permutation seeded by the seed). Only two settings differ from the variant: no token-level examples
(`explain_examples=0`, illustrations that no figure uses) and no pixel baseline (`pixel_baseline=False`, a baseline
beside the model). Each run is a full default run (minutes on 2 cores); its stages are kept under
.cache/bench/validity-default/, so an interrupted benchmark resumes where it stopped, and the result file is
rewritten after every seed.

`--model ridge` (the fast stand-in): the same folds and everything after the model as in `stage_explain`, but the
fine-tuned MiniLM is swapped for a ridge regression of the outcome on the captions' token counts
(`WordWeights.fit`) in each fold: exact sentence Shapley values of each fold model on its held-out captions
(`explain_segments`), `crossfit_factors` with the run's defaults, and the gate (paired bootstrap of the out-of-fold
RMSE difference, `rmse_diff_ci`).

- synthetic: the 5 planted attributes are `recovered` when a factor naming them (present or absent phrase) is
  flagged with the planted sign and none with the other sign; unplanted = flagged factors that name no planted
  attribute; then the same with the targets shuffled.
- real (ridge only): the posters of `--real` (movies.csv: rating, poster), described the same way, ratings
  shuffled with each seed. Skipped, with a line saying so, when the folder is absent.

For the shuffled targets both figures are printed: seeds with any factor flagged by the full procedure
(gate included) and by the held-out tests and Benjamini-Hochberg alone (gate ignored). Captions are cached
under .cache/bench/ by image content hash. Results: bench/results/validity.json (both models; a run of one
model keeps the other's last figures, with their own date and commit).
"""
import argparse, contextlib, io, json, os, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd

from _results import write_result, read_results, commit, sample_dir
from posterlens.core import find_root, hash_file, read_parquet, write_parquet


def describe_cached(paths:list, cache:Path) -> list[str]:
    "Offline-describer captions of image files, cached by content hash (parquet)."
    from posterlens.describe import describe_image
    f = cache/'describer-captions.parquet'
    known = dict(zip(*read_parquet(f)[['hash', 'caption']].T.values)) if f.exists() else {}
    hashes = [hash_file(p) for p in paths]
    new = {h: describe_image(p) for h, p in zip(hashes, paths) if h not in known}
    if new:
        known.update(new)
        cache.mkdir(parents=True, exist_ok=True)
        write_parquet(pd.DataFrame({'hash': list(known), 'caption': list(known.values())}), f)
    return [known[h] for h in hashes]


def synth_set(n:int, seed:int, cache:Path) -> tuple[pd.DataFrame, dict]:
    "Captions and targets of `n` synthetic posters drawn with `seed`, and their truth."
    from posterlens.data import make_synth, synth_truth
    with contextlib.redirect_stderr(io.StringIO()): csv = make_synth(cache/f'synth-n{n}-s{seed}', n=n, seed=seed)   # no progress bar
    df = pd.read_csv(csv)
    df['caption'] = describe_cached([csv.parent/p for p in df.image], cache)
    return df[['id', 'caption', 'target']], synth_truth(n, seed)


def real_set(folder:Path, cache:Path) -> pd.DataFrame:
    "Captions and ratings of the real posters in `folder`."
    m = pd.read_csv(folder/'movies.csv')
    m = m[m.rating.notna() & m.poster.map(lambda p: (folder/p).exists())].reset_index(drop=True)
    return pd.DataFrame({'id': m.imdb_id.astype(str), 'caption': describe_cached([folder/p for p in m.poster], cache),
                         'target': m.rating.astype(float)})


def analyse(df:pd.DataFrame, y:np.ndarray, tok, folds:int, alpha:float, fdr:float, seed:int=42) -> tuple[pd.DataFrame, dict]:
    "Word model per fold, explanations of its held-out captions, the held-out factor tests: (factors, summary)."
    from posterlens.model import make_folds, rmse_diff_ci
    from posterlens.explain import WordWeights, explain_segments, crossfit_factors
    parts, held = [], np.full(len(df), -1)
    pred, base = np.zeros(len(df)), np.zeros(len(df))
    for k, (tr, va) in enumerate(make_folds(len(df), folds, seed)):
        m = WordWeights.fit(tok, df.caption.iloc[tr], y[tr], alpha=alpha)
        parts.append(explain_segments(m, df.caption.iloc[va].tolist(), ids=df.id.iloc[va].tolist(), progress=False).assign(fold=k))
        held[va], pred[va], base[va] = k, m.predict(df.caption.iloc[va].tolist()), y[tr].mean()
    d, lo, hi = rmse_diff_ci(y, pred, base, 1000, seed)
    beats = bool(hi < 0)
    fac, _, s = crossfit_factors(pd.concat(parts, ignore_index=True), df[['id', 'caption']].assign(target=y, heldout=held),
                                 fdr=fdr, beats_mean=beats)
    return fac, {**s, 'rmse_diff': d, 'beats_mean': beats}


# -- the fast stand-in -------------------------------------------------------------------------------------------

def ridge_validity(a, cache:Path) -> dict:
    "Synthetic seeds (planted and shuffled) and real posters with shuffled ratings, ridge word model per fold."
    from transformers import AutoTokenizer
    from posterlens.model import resolve_text_model
    from posterlens.explain import planted_recovery, unplanted_flagged
    tok = AutoTokenizer.from_pretrained(resolve_text_model('minilm'))
    procedure = (f"{a.folds}-fold ridge word model per fold (WordWeights.fit, alpha {a.alpha}) instead of fine-tuned "
                 f"MiniLM; exact sentence Shapley values on held-out captions; crossfit_factors defaults (<= 12 factors per fold "
                 f"model, held-out OLS + HC3, Benjamini-Hochberg at FDR {a.fdr}); nothing flagged unless the model beats the mean")
    print(f"ridge stand-in: {procedure}", flush=True)
    rows = []
    for seed in range(a.seeds):
        df, truth = synth_set(a.n, seed, cache)
        y = df.target.to_numpy(float)
        fac, s = analyse(df, y, tok, a.folds, a.alpha, a.fdr)
        rec = planted_recovery(fac, truth)
        un = unplanted_flagged(fac, truth)
        yn = np.random.default_rng(seed).permutation(y)
        _, sn = analyse(df, yn, tok, a.folds, a.alpha, a.fdr)
        rows.append({'seed': seed, 'rows': len(fac), 'flagged': s['significant'], 'recovered': int(rec.recovered.sum()),
                     'planted': len(rec), 'missed': ', '.join(rec.attribute[~rec.recovered]) or '-', 'unplanted': len(un),
                     'unplanted_factors': un, 'beats_mean': s['beats_mean'], 'null_flagged': sn['significant'],
                     'null_flagged_no_gate': sn['q_below_level'], 'null_beats_mean': sn['beats_mean']})
        print("ridge   " + seed_line(rows[-1]), flush=True)
    real, rrows, real_fig = Path(a.real) if a.real else None, [], None
    if real and (real/'movies.csv').exists():
        rd = real_set(real, cache)
        y = rd.target.to_numpy(float)
        fac, s = analyse(rd, y, tok, a.folds, a.alpha, a.fdr)
        real_fig = {'posters': len(rd), 'beats_mean': s['beats_mean'], 'rmse_diff': s['rmse_diff'], 'tested': s['tested'],
                    'q_below_level': s['q_below_level'], 'flagged': s['significant']}
        print(f"ridge   real posters ({len(rd)}), actual ratings: model beats mean: {s['beats_mean']} (RMSE difference "
              f"{s['rmse_diff']:+.3f}); {s['tested']} factor rows, {s['q_below_level']} pass BH alone, {s['significant']} flagged")
        for seed in range(a.seeds):
            _, sn = analyse(rd, np.random.default_rng(seed).permutation(y), tok, a.folds, a.alpha, a.fdr)
            rrows.append({'seed': seed, 'null_flagged': sn['significant'], 'null_flagged_no_gate': sn['q_below_level'],
                          'null_beats_mean': sn['beats_mean']})
            print(f"ridge   real posters, shuffled ratings seed {seed}: {sn['significant']} flagged ({sn['q_below_level']} "
                  f"without the gate; model beats mean: {sn['beats_mean']})", flush=True)
    else: print(f"ridge   real posters: skipped ({(real/'movies.csv') if real else '--real not given'} not found)")
    return {'procedure': procedure, 'n': a.n, 'folds': a.folds, 'seeds': rows, 'summary': summarise(rows),
            'real': real_fig, 'real_shuffled': rrows,
            'real_shuffled_summary': ({'seeds': len(rrows), 'null_any_flagged': sum(r['null_flagged'] > 0 for r in rrows),
                                       'null_any_flagged_no_gate': sum(r['null_flagged_no_gate'] > 0 for r in rrows)}
                                      if rrows else None)}


# -- the real procedure ------------------------------------------------------------------------------------------

def default_overrides(a, seed:int, where:Path) -> dict:
    "The settings the benchmark changes on top of the `default` variant."
    ov = {'synth_n': a.n, 'synth_seed': seed, 'runs_dir': str(where), 'explain_examples': 0, 'pixel_baseline': False}
    if a.folds != 5: ov['folds'] = a.folds
    if a.fdr != 0.05: ov['fdr'] = a.fdr
    return {**ov, **a.set}


def shuffled_csv(csv:Path, seed:int, out:Path) -> Path:
    "The posters of `csv` with their targets permuted (the same permutation as the stand-in's), image paths absolute."
    df = pd.read_csv(csv)
    df = pd.DataFrame({'id': df.id.astype(str), 'image': [str((csv.parent/p).resolve()) for p in df.image],
                       'target': np.random.default_rng(seed).permutation(df.target.to_numpy(float))})
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or not pd.read_csv(out, dtype={'id': str}).equals(df): df.to_csv(out, index=False)
    return out


def default_seed(a, seed:int, base:Path, partial=lambda row: None) -> dict:
    "The default variant's full run on seed `seed`'s synthetic posters, then on the same posters with shuffled targets."
    from posterlens.core import load_settings, read_json
    from posterlens.data import dataset_csv
    from posterlens.pipeline import run_stages, artifact, STAGES
    t0 = time.time()
    cfg = load_settings('default', default_overrides(a, seed, base/f'seed{seed}'))
    res = run_stages(cfg, list(STAGES), progress=a.progress)
    metrics, summ = res['train'], read_json(artifact(cfg, 'explain', 'summary.json'))
    pl = summ.get('planted') or {}
    row = {'seed': seed, 'rows': summ['factors']['n'], 'flagged': summ['factors']['significant'],
           'recovered': int(pl.get('recovered') or 0), 'planted': int(pl.get('effects') or 0),
           'missed': ', '.join(r['attribute'] for r in pl.get('table', []) if not r['recovered']) or '-',
           'unplanted': len(pl.get('unplanted_flagged') or []), 'unplanted_factors': list(pl.get('unplanted_flagged') or []),
           'beats_mean': metrics.get('beats_mean'), 'rmse_model': metrics['model']['rmse'], 'rmse_mean': metrics['mean']['rmse'],
           'null_flagged': None, 'null_flagged_no_gate': None, 'null_beats_mean': None, 'null_rmse_model': None,
           'seconds': round(time.time() - t0, 1), 'null_seconds': None}
    partial(row)                 # the real-target half is kept even if the shuffled half never finishes
    t1 = time.time()
    csv = shuffled_csv(dataset_csv(cfg), seed, base/f'seed{seed}-shuffled'/'posters.csv')
    ncfg = load_settings('default', {**default_overrides(a, seed, base/f'seed{seed}-shuffled'), 'dataset': str(csv), 'id_col': 'id'})
    nres = run_stages(ncfg, list(STAGES), progress=a.progress)
    nsumm = read_json(artifact(ncfg, 'explain', 'summary.json'))
    return {**row, 'null_flagged': nsumm['factors']['significant'], 'null_flagged_no_gate': nsumm['validation']['q_below_level'],
            'null_beats_mean': nres['train'].get('beats_mean'), 'null_rmse_model': nres['train']['model']['rmse'],
            'null_seconds': round(time.time() - t1, 1)}


def earlier_seeds(a, procedure:str) -> list:
    "With --first-seed K: the latest result's seeds 0..K-1 of the same procedure and size (each row names its commit), else []."
    if not a.first_seed: return []
    f = ((read_results().get('validity') or {}).get('figures') or {}).get('default') or {}
    rows = [r for r in f.get('seeds', []) if r['seed'] < a.first_seed and r.get('null_flagged') is not None]
    if f.get('procedure') != procedure or f.get('n') != a.n or sorted(r['seed'] for r in rows) != list(range(a.first_seed)):
        raise SystemExit(f"--first-seed {a.first_seed}: the latest default result does not hold seeds 0..{a.first_seed - 1} "
                         f"of this procedure at n = {a.n}; run from seed 0")
    return [{**r, 'commit': r.get('commit') or f.get('commit')} for r in rows]


def default_validity(a, cache:Path, save) -> dict:
    "The default variant's procedure on `a.seeds` seeds; `save(fig)` after every run (real, then shuffled targets)."
    from posterlens.core import load_settings
    base = cache/'validity-default'
    cfg = load_settings('default', default_overrides(a, 0, base))
    procedure = (f"the `default` variant's own run (posterlens pipeline: offline describer, {cfg.text_model} fine-tuned "
                 f"{cfg.epochs} epochs with {cfg.freeze_layers} lower layers frozen, {cfg.folds} folds, exact sentence Shapley "
                 f"values of each fold model on its held-out captions, <= {cfg.max_factors} factors per fold model tested on "
                 f"its held-out rows, HC3, Benjamini-Hochberg at FDR {cfg.fdr}, the beats-the-mean gate); no token examples, "
                 f"no pixel baseline")
    print(f"default model: {procedure}", flush=True)
    rows = earlier_seeds(a, procedure)
    fig = {'procedure': procedure, 'n': a.n, 'folds': int(cfg.folds), 'seeds': [], 'summary': None,
                     'settings': {k: cfg.get(k) for k in ('text_model', 'epochs', 'lr', 'freeze_layers', 'folds', 'seed',
                                                          'max_factors', 'fdr', 'max_segments')}}
    def keep(rs):
        nonlocal fig
        fig = {**fig, 'seeds': rs, 'summary': summarise(rs),
               'complete': len(rs) == a.first_seed + a.seeds and all(r['null_flagged'] is not None for r in rs)}
        save(fig)
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        def partial(row):
            print(f"default synthetic seed {seed}, actual targets done [{row['seconds']:.0f} s]", flush=True)
            keep(rows + [row])
        rows.append({**default_seed(a, seed, base, partial), 'commit': commit()})
        print("default " + seed_line(rows[-1]) + f" [{rows[-1]['seconds']:.0f} s + {rows[-1]['null_seconds']:.0f} s]", flush=True)
        keep(rows)
    return fig


# -- figures -----------------------------------------------------------------------------------------------------

def seed_line(r:dict) -> str:
    return (f"synthetic seed {r['seed']}: {r['rows']} factor rows, {r['flagged']} flagged; planted recovered "
            f"{r['recovered']}/{r['planted']} (missed: {r['missed']}); unplanted flagged {r['unplanted']} "
            f"{r['unplanted_factors'] or ''}; shuffled: {r['null_flagged']} flagged ({r['null_flagged_no_gate']} without "
            f"the gate; model beats mean: {r['null_beats_mean']})")


def summarise(rows:list) -> dict:
    "Counts over seeds: all planted recovered, mean recovered, unplanted flagged, shuffled runs with anything flagged."
    if not rows: return {}
    d = pd.DataFrame(rows)
    n = d[d.null_flagged.notna()]          # seeds whose shuffled-target run has finished
    return {'seeds': len(d), 'all_recovered': int((d.recovered == d.planted).sum()), 'recovered_mean': float(d.recovered.mean()),
            'planted': int(d.planted.max()), 'unplanted_mean': float(d.unplanted.mean()), 'unplanted_max': int(d.unplanted.max()),
            'seeds_with_unplanted': int((d.unplanted > 0).sum()), 'rows_mean': float(d.rows.mean()),
            'beats_mean': int(d.beats_mean.fillna(False).astype(bool).sum()), 'null_seeds': len(n),
            'null_any_flagged': int((n.null_flagged > 0).sum()), 'null_any_flagged_no_gate': int((n.null_flagged_no_gate > 0).sum()),
            'null_beats_mean': int(n.null_beats_mean.fillna(False).astype(bool).sum())}


def side_by_side(figs:dict) -> pd.DataFrame:
    "One column per model, one row per closing figure."
    out = {}
    for model, f in figs.items():
        s = (f or {}).get('summary') or {}
        if not s: continue
        k = s['seeds']
        out[model] = {'seeds x posters': f"{k} x {f['n']}",
                      'all planted recovered (seeds)': f"{s['all_recovered']} of {k}",
                      'planted recovered per seed (mean)': f"{s['recovered_mean']:.1f} of {s['planted']}",
                      'unplanted flagged per seed (mean, max)': f"{s['unplanted_mean']:.2f}, {s['unplanted_max']}",
                      'model beats the mean (seeds)': f"{s['beats_mean']} of {k}",
                      'shuffled targets: anything flagged (seeds)': f"{s['null_any_flagged']} of {s['null_seeds']}",
                      'shuffled targets, gate ignored: anything passes BH (seeds)': f"{s['null_any_flagged_no_gate']} of {s['null_seeds']}",
                      'shuffled targets: model beats the mean (seeds)': f"{s['null_beats_mean']} of {s['null_seeds']}"}
    return pd.DataFrame(out)


def table_rows(figs:dict) -> list:
    "README rows: the side-by-side figures."
    t = side_by_side(figs)
    return [{'figure': i, **{c: t.at[i, c] for c in t.columns}} for i in t.index]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', choices=['ridge', 'default', 'both'], default='both',
                    help="ridge: the fast stand-in; default: the default variant's own run per seed (minutes each)")
    ap.add_argument('--seeds', type=int, default=None, help='seeds (default: 10 for ridge, 5 for the default model)')
    ap.add_argument('--first-seed', type=int, default=0,
                    help='default model: start at this seed and keep the latest result\'s seeds below it (a long run in parts)')
    ap.add_argument('--n', type=int, default=400)
    ap.add_argument('--folds', type=int, default=5)
    ap.add_argument('--alpha', type=float, default=1.0)
    ap.add_argument('--fdr', type=float, default=0.05)
    ap.add_argument('--real', default=str(sample_dir()), help='real posters (movies.csv); default: shared/data/posters-sample beside the checkout')
    ap.add_argument('--progress', action='store_true', help='progress bars of the default runs')
    ap.add_argument('--smoke', action='store_true', help='tiny sizes (40 posters, 1 seed, a tiny random text model): seconds')
    a = ap.parse_args()
    a.set = {}
    cache, t0 = find_root()/'.cache'/'bench', time.time()
    if a.smoke:
        from posterlens.model import tiny_text_model
        a.n, a.folds, a.real = 40, 2, ''
        a.seeds = 1
        cache = Path(tempfile.mkdtemp(prefix='validity-smoke-'))
        a.set = {'text_model': tiny_text_model(cache/'tiny-bert'), 'cache_dir': str(cache), 'epochs': 1, 'freeze_layers': 0, 'max_length': 64,
                 'n_bootstrap': 200, 'max_segments': 4}
    models = ['ridge', 'default'] if a.model == 'both' else [a.model]
    figs = {}
    stamp = lambda f: {**f, 'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'commit': commit()}
    def save():
        "Write this run's models' figures beside the other model's latest ones (read again now: another run may be going)."
        latest = {} if a.smoke else (read_results().get('validity') or {}).get('figures') or {}
        for m in ('ridge', 'default'):
            if m not in models and latest.get(m): figs[m] = latest[m]
        write_result('validity', figs, table_rows(figs), smoke=a.smoke)
    for m in models:
        ns = a.seeds or (10 if m == 'ridge' else 5)
        b = argparse.Namespace(**{**vars(a), 'seeds': ns})
        if m == 'ridge':
            figs['ridge'] = stamp(ridge_validity(b, cache))
            save()
        else:
            def keep(f):
                figs['default'] = stamp(f); save()
            default_validity(b, cache, keep)
    t = side_by_side(figs)
    print(f"\n== closing figures ({time.time() - t0:.0f} s)")
    for m, f in figs.items(): print(f"{m}: {f['procedure']} ({f['date']}, {f['commit']})")
    print(t.to_string())
    if 'ridge' in t and 'default' in t:
        r, d = figs['ridge']['summary'], figs['default']['summary']
        print(f"stand-in minus real model: planted recovered per seed {r['recovered_mean'] - d['recovered_mean']:+.1f}, "
              f"unplanted flagged per seed {r['unplanted_mean'] - d['unplanted_mean']:+.2f}, share of shuffled seeds with "
              f"anything flagged {r['null_any_flagged']/max(r['null_seeds'], 1) - d['null_any_flagged']/max(d['null_seeds'], 1):+.2f}")
    rr = (figs.get('ridge') or {}).get('real_shuffled_summary')
    if rr: print(f"ridge, real posters, shuffled ratings: seeds with any factor flagged: {rr['null_any_flagged']} of {rr['seeds']} "
                 f"(gate ignored: {rr['null_any_flagged_no_gate']} of {rr['seeds']})")


if __name__ == '__main__': main()
