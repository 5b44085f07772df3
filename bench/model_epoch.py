"""Seconds per training epoch of the default text model on describer-style captions (CPU budget check).

    .venv/bin/python bench/model_epoch.py [--n 400] [--epochs 2] [--model minilm] [--max_length 256] [--batch 32] [--smoke]

Trains fold 0 of KFold(5) (so ~80% of --n rows), prints tokens per caption, s/epoch, val RMSE vs the mean
predictor, and what 5 folds x E epochs would cost at this speed."""
import argparse, tempfile, time
from pathlib import Path
import numpy as np
from fastcore.basics import AttrDict
from _results import write_result
from posterlens.model import toy_captions, make_folds, train_fold, rmse, TextRegressor, tiny_text_model

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=400); ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--model', default='minilm'); ap.add_argument('--max_length', type=int, default=256)
    ap.add_argument('--batch', type=int, default=32); ap.add_argument('--lr', type=float, default=5e-5)
    ap.add_argument('--extra', type=int, default=1, help='extra filler sentences per caption (longer texts)')
    ap.add_argument('--smoke', action='store_true', help='20 captions, 1 epoch, a tiny random model: seconds')
    a = ap.parse_args()
    if a.smoke: a.n, a.epochs, a.model = 20, 1, tiny_text_model(Path(tempfile.mkdtemp())/'tiny')
    df = toy_captions(a.n, seed=0)
    filler = ' The title is set in a plain sans-serif font and the tagline sits below it.'
    df['caption'] = df.caption + filler*a.extra
    tr, va = make_folds(len(df), 5, 42)[0]
    cfg = AttrDict(text_model=a.model, pooling='mean', max_length=a.max_length, batch_size=a.batch, epochs=a.epochs,
                   lr=a.lr, weight_decay=0.01, warmup_ratio=0.1, seed=42)
    tok = TextRegressor.from_pretrained(a.model).tokenizer
    ntok = [len(x) for x in tok(df.caption.tolist())['input_ids']]
    t = time.time()
    res = train_fold(df.caption.iloc[tr], df.target.iloc[tr], df.caption.iloc[va], df.target.iloc[va], cfg, None, progress=False)
    spe = np.mean([h['seconds'] for h in res['history']])
    print(f"{len(tr)} train / {len(va)} val captions, tokens per caption median {int(np.median(ntok))} (range {min(ntok)}-{max(ntok)})")
    for h in res['history']: print(f"  epoch {h['epoch']}: loss {h['train_loss']:.3f}  val RMSE {h['val_rmse']:.3f}  {h['seconds']:.1f} s")
    print(f"mean predictor val RMSE {rmse(df.target.iloc[va], np.full(len(va), df.target.iloc[tr].mean())):.3f}")
    print(f"s/epoch (train + val predict): {spe:.1f}; total {time.time()-t:.0f} s")
    for e in (2, 3, 4, 6): print(f"  5 folds x {e} epochs ~ {5*e*spe/60:.1f} min")
    base = rmse(df.target.iloc[va], np.full(len(va), df.target.iloc[tr].mean()))
    write_result('model_epoch', {'n': a.n, 'model': 'tiny' if a.smoke else a.model, 'epochs': a.epochs, 'max_length': a.max_length,
                                 'batch': a.batch, 'tokens_median': int(np.median(ntok)), 'seconds_per_epoch': spe,
                                 'history': res['history'], 'val_rmse_mean_predictor': base},
                 [(f"training epoch, {'a tiny random model' if a.smoke else a.model} fully fine-tuned, {len(tr)} toy captions (s)", f'{spe:.1f}')], smoke=a.smoke)

if __name__ == '__main__': main()
