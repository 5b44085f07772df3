"""Training-step speed: dynamic padding with attention masks (posterlens) vs the reference recipe
(every text padded to 500 tokens, no attention mask), on the same batch of describer-style captions.

    .venv/bin/python bench/model_padding.py [--model minilm] [--batch 32] [--reps 2] [--smoke]

Prints seconds per training step (forward + backward + AdamW step) for both and their ratio.
On 2 CPU cores the padded steps take about a minute each: expect a few minutes in all."""
import argparse, tempfile, time
from pathlib import Path
import numpy as np, torch
from _results import write_result
from posterlens.model import TextRegressor, toy_captions, tiny_text_model

def step_time(model, batch, y, reps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    ts = []
    for i in range(reps + 1):          # first step is a warm-up
        t = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(**batch), y)
        opt.zero_grad(); loss.backward(); opt.step()
        if torch.cuda.is_available(): torch.cuda.synchronize()
        if i: ts.append(time.perf_counter() - t)
    return float(np.median(ts))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='minilm'); ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--reps', type=int, default=2); ap.add_argument('--pad_to', type=int, default=500)
    ap.add_argument('--smoke', action='store_true', help='a tiny random model, batch 4, padded to 64: seconds')
    a = ap.parse_args()
    if a.smoke: a.model, a.batch, a.reps, a.pad_to = tiny_text_model(Path(tempfile.mkdtemp())/'tiny'), 4, 1, 64
    texts = toy_captions(a.batch, seed=0).caption.tolist()
    m = TextRegressor.from_pretrained(a.model, max_length=512)
    y = torch.zeros(a.batch, device=m.device)
    dyn = m.tokenize(texts)
    ref = m.tokenizer(texts, padding='max_length', truncation=True, max_length=a.pad_to, return_tensors='pt')
    ref = {'input_ids': ref['input_ids'].to(m.device), 'attention_mask': torch.ones_like(ref['input_ids']).to(m.device)}
    t_dyn = step_time(m, dyn, y, a.reps)
    t_ref = step_time(m, ref, y, a.reps)
    print(f"model {a.model}, batch {a.batch}, device {m.device}, threads {torch.get_num_threads()}")
    print(f"dynamic padding + mask: {tuple(dyn['input_ids'].shape)}  {t_dyn:.3f} s/step")
    print(f"pad to {a.pad_to}, no mask:    {tuple(ref['input_ids'].shape)}  {t_ref:.3f} s/step")
    print(f"ratio (pad-{a.pad_to} / dynamic): {t_ref/t_dyn:.1f}x")
    write_result('model_padding', {'model': 'tiny' if a.smoke else a.model, 'batch': a.batch, 'pad_to': a.pad_to,
                                   'dynamic_shape': list(dyn['input_ids'].shape), 's_per_step_dynamic': t_dyn,
                                   's_per_step_padded': t_ref, 'ratio': t_ref/t_dyn},
                 [(f'training step, pad to {a.pad_to} without mask / dynamic padding ({"a tiny random model" if a.smoke else a.model}, batch {a.batch})', f'{t_ref/t_dyn:.1f}x')],
                 smoke=a.smoke)

if __name__ == '__main__': main()
