"""Explanation speed: the reference recipe vs SHAP with dynamic padding vs the exact segment explainer,
in one run, on the same model and the same captions.

    .venv/bin/python bench/explain_speed.py [--captions describer|varied] [--n 1000] [--n-ref 1] [--n-dyn 3]
                                            [--model minilm|FOLDER] [--threads N] [--smoke]

- reference: `shap.Explainer(f, masker=tokenizer)` (Partition, SHAP's default 500 evaluations) where `f` pads
  every text to 500 tokens and passes no attention mask, as the reference analysis did (timed on --n-ref
  captions; about a minute each on 2 CPU cores);
- shap-dynamic: the same explainer with `TextRegressor.predict` (dynamic padding, length-sorted batches,
  attention masks) (--n-dyn captions);
- segments: `posterlens.explain.explain_segments`, exact Shapley values over sentences, on all --n captions.

Captions: `describer` (default) draws --n synthetic posters and describes them with the offline describer
(cached under .cache/bench/); `varied` builds ~100-token, 5-sentence captions with many different sentence
endings, so far fewer sub-texts are shared between captions (a harder case for the segment explainer).
The model is MiniLM with a random (seeded) regression head unless --model names a saved `TextRegressor`.
Prints seconds per caption, the ratios, CPU time and the load average: other processes sharing the cores
slow every timing, so compare numbers from one run only."""
import argparse, os, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _results import write_result
from posterlens.core import find_root, read_parquet, write_parquet
from posterlens.model import TextRegressor, tiny_text_model
from posterlens.explain import explain_segments, explain_tokens


def load_avg() -> str:
    return ', '.join(f'{x:.2f}' for x in os.getloadavg())


def describer_captions(n:int, seed:int=1) -> list[str]:
    "Offline-describer captions of `n` synthetic posters (cached)."
    cache = find_root()/'.cache'/'bench'
    f = cache/f'describer-n{n}-s{seed}.parquet'
    if f.exists(): return read_parquet(f).caption.tolist()
    from posterlens.data import make_synth
    from posterlens.describe import describe_image
    csv = make_synth(cache/f'synth-n{n}-s{seed}', n=n, seed=seed)
    df = pd.read_csv(csv)
    caps = [describe_image(csv.parent/p) for p in df.image]
    write_parquet(pd.DataFrame({'caption': caps}), f)
    return caps


def varied_captions(n:int, seed:int=0) -> list[str]:
    "About 100-token captions of 5 sentences with varied endings (little sharing between captions)."
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]
    det = ['with deep shadows pooling around the edges of the frame', 'with a nearly black background behind the central figure',
           'lit by a single narrow beam of light from the upper left', 'with murky corners and very little contrast overall',
           'with soft washed out highlights across most of the frame', 'with a pale sky filling the upper half of the poster',
           'with plenty of white space around the main subject', 'with glowing light spilling over the whole picture']
    lum = ['The image is dark and low-key, {}.', 'The image is bright and high-key, {}.']
    hue = ['Cool blue and teal tones dominate the palette, {}.', 'Warm red and orange tones dominate the palette, {}.', 'It is black and white, {}.']
    hdet = ['giving the poster a calm and distant mood', 'especially in the background and the clothing of the figures',
            'which sets a strong emotional tone for the scene', 'from the sky down to the ground at the bottom']
    comp = ['The composition is busy and cluttered, with many small shapes, lines and objects scattered all over the {}.',
            'The composition is clean and minimal, with one clear subject placed near the centre of an otherwise empty {}.']
    place = ['poster', 'frame', 'image', 'page', 'canvas', 'layout']
    title = ['Large bold text dominates the {} of the poster, spelling out the title in heavy capital letters.',
             'There is only a little small text, a short title line tucked away near the {} edge.']
    where = ['top', 'bottom', 'left', 'right', 'middle']
    faces = ['One face appears in close-up, looking straight at the viewer with a {} expression.',
             'Three small faces appear in the middle distance, turned slightly away with {} expressions.',
             'No faces are visible; the figures are seen only from behind, in a {} silhouette.']
    mood = ['serious', 'calm', 'tense', 'playful', 'worried', 'stern', 'dreamy']
    return [' '.join([pick(lum).format(pick(det)), pick(hue).format(pick(hdet)), pick(comp).format(pick(place)),
                      pick(title).format(pick(where)), pick(faces).format(pick(mood))]) for _ in range(n)]


def reference_explainer(model, pad_to:int=500, batch_size:int=64):
    "The reference recipe: every text padded to `pad_to` tokens, no attention mask."
    import shap
    def f(texts):
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                ids = model.tokenizer([str(t) for t in texts[i:i+batch_size]], padding='max_length', truncation=True,
                                      max_length=pad_to, return_tensors='pt')['input_ids'].to(model.device)
                out.append(model(ids, torch.ones_like(ids)).float().cpu().numpy())
        return np.concatenate(out)*model.target_std + model.target_mean
    return shap.Explainer(f, masker=model.tokenizer)


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    r = fn()
    return r, time.perf_counter() - t, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--captions', default='describer', choices=['describer', 'varied'])
    ap.add_argument('--n', type=int, default=1000, help='captions for the segment explainer')
    ap.add_argument('--n-ref', type=int, default=1, help='captions for the reference recipe (about a minute each)')
    ap.add_argument('--n-dyn', type=int, default=3, help='captions for SHAP with dynamic padding')
    ap.add_argument('--model', default='minilm')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--smoke', action='store_true', help='10 varied captions, a tiny random model: seconds')
    a = ap.parse_args()
    if a.smoke: a.captions, a.n, a.n_ref, a.n_dyn, a.model = 'varied', 10, 1, 1, tiny_text_model(Path(tempfile.mkdtemp())/'tiny')
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    p = Path(a.model)
    model = (TextRegressor.load(p) if (p/'posterlens_head.json').exists() else
             TextRegressor.from_pretrained(a.model, max_length=512, target_mean=6.0, target_std=0.8)).eval()
    caps = describer_captions(a.n) if a.captions == 'describer' else varied_captions(a.n)
    ntok = np.mean([len(x) for x in model.tokenizer(caps)['input_ids']])
    nseg = np.mean([len(c.split('. ')) for c in caps])
    print(f"model {a.model} on {model.device}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; "
          f"{len(caps)} {a.captions} captions, {ntok:.0f} tokens and ~{nseg:.1f} sentences each")
    print(f"load average before: {load_avg()}")
    rows = []
    ex = reference_explainer(model)
    _, w, c = timed(lambda: ex(caps[:a.n_ref], silent=True))
    rows.append(('reference (pad to 500, no mask)', a.n_ref, w, c))
    print(f"  reference done, load {load_avg()}")
    _, w, c = timed(lambda: explain_tokens(model, caps[:a.n_dyn]))
    rows.append(('shap Partition, dynamic padding', a.n_dyn, w, c))
    print(f"  shap-dynamic done, load {load_avg()}")
    seg, w, c = timed(lambda: explain_segments(model, caps, progress=False))
    rows.append(('exact segment Shapley', len(caps), w, c))
    st = seg.attrs['stats']
    print(f"  segments done, load {load_avg()}: {st['coalitions']:,} coalitions, {st['unique']:,} distinct sub-texts, "
          f"{st['tokens']:,} tokens evaluated")
    res = pd.DataFrame(rows, columns=['method', 'captions', 'wall_s', 'cpu_s'])
    res['s_per_caption'] = res.wall_s/res.captions
    res['cpu_s_per_caption'] = res.cpu_s/res.captions
    ref = res.s_per_caption.iloc[0]
    res['speedup_vs_reference'] = ref/res.s_per_caption
    pd.set_option('display.width', 200)
    print(res.round(3).to_string(index=False))
    seg_total = res.wall_s.iloc[2]*1000/len(caps)
    print(f"\nsegment explainer: {res.wall_s.iloc[2]:.1f} s for {len(caps)} captions "
          f"(-> {seg_total:.0f} s per 1000 captions; target <= 300 s: {'met' if seg_total <= 300 else 'NOT met'})")
    print(f"speed-up per caption vs reference: {res.speedup_vs_reference.iloc[2]:.0f}x (target >= 100x: "
          f"{'met' if res.speedup_vs_reference.iloc[2] >= 100 else 'NOT met'}); shap-dynamic vs reference: "
          f"{res.speedup_vs_reference.iloc[1]:.1f}x")
    print(f"load average after: {load_avg()}  (2 busy threads on 2 cores = 2.0; more means shared cores)")
    write_result('explain_speed', {'captions': a.captions, 'n': len(caps), 'model': 'tiny' if a.smoke else a.model,
                                   'tokens_mean': float(ntok), 'methods': res.to_dict('records'), 'stats': st,
                                   's_per_1000_captions_segments': seg_total, 'load_after': os.getloadavg()[0]},
                 [(f'exact segment Shapley, s per 1000 {a.captions} captions ({"a tiny random model" if a.smoke else a.model}; target <= 300)', f'{seg_total:.0f}'),
                  ('exact segment Shapley, speed-up per caption vs the reference SHAP recipe (target >= 100x)',
                   f'{res.speedup_vs_reference.iloc[2]:.0f}x')], smoke=a.smoke)


if __name__ == '__main__':
    main()
