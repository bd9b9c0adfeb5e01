"""The U-Net's edges under CPU bf16 autocast: first convolution, last GroupNorm and output convolution in fp32 or not.

    python bench/bf16_layers.py [--seeds 3] [--repeats 7] [--seconds 4] [--tables 1 2 3] [--threads N]

Three ways to run the shipped 8x8 digits models (lesson 07, "bfloat16 at the edges of the network"):
`fp32` (no autocast), `bf16 before` (autocast with only attention in fp32, the rule before issue 17: `_in_fp32` patched
to pass every other module through) and `bf16 now` (autocast; attention, the first convolution and the output layers
in fp32). It prints three tables:

1. per network call, on the 300 test digits noised to x_t (`--seeds` noise seeds): the RMS difference from the fp32
   model of the output v-hat and of x0-hat = sqrt(abar) x_t - sqrt(1 - abar) v-hat, mean +- sd over the seeds;
2. held-out quality as lesson 12 measures it: DDIM 50 (eta = 0), w = 1, 300 samples per seed (the classes in turn for
   `digits-cond`), the same seeds for every variant; FD to the 300 test digits in the judge's features and the fraction
   recognised, mean +- sd over the seeds, the floor (300 real training digits, 10 subsets), and the RMS pixel difference
   of each sample from the fp32 sample of the same seed;
3. speed, the variants in turns (`--repeats` rounds): sampling images/s (`digits-cond`, DDIM 50, 300 samples) and
   training steps/s (`ddpm_nb_train`'s recipe, batch 128, the full `train_step`, `--seconds` per turn); medians and
   ranges over the turns, and each variant's speed divided by the 'bf16 before' turn of the same round (a slow
   moment of a shared machine hits neighbouring turns alike, so these ratios are steadier than the medians).

Benchmarks, not tests: nothing is asserted. Run nothing else on the cores meanwhile; it takes about four minutes on 2.
"""
import argparse, statistics, time
from contextlib import nullcontext
from unittest import mock
import torch
import ddpm_nb.unet as unet
from ddpm_nb.attention import SelfAttention
from ddpm_nb.budget import images_per_second
from ddpm_nb.checkpoint import load_pretrained
from ddpm_nb.data import load_dataset
from ddpm_nb.metrics import DigitJudge, over_runs
from ddpm_nb.samplers import make_sampler, sample
from ddpm_nb.train import Trainer, TrainConfig
from cpu_minute import machine

REAL_IN_FP32 = unet._in_fp32
VARIANTS = ('fp32', 'bf16 before', 'bf16 now')
TS = (0, 1, 3, 10, 30, 100, 300, 999)


def attention_only(f, h, dtype=None):
    "The rule before issue 17: under autocast only attention runs in fp32."
    return REAL_IN_FP32(f, h, dtype) if isinstance(f, SelfAttention) else f(h)


def rule(variant:str):
    "The context a variant runs in: the old rule patched in for 'bf16 before'."
    return mock.patch.object(unet, '_in_fp32', attention_only) if variant == 'bf16 before' else nullcontext()


def nets(name:str) -> tuple:
    "variant -> the shipped model `name` in that precision (same weights), and its schedule."
    shipped, sched, _ = load_pretrained(name)
    out = {}
    for v in VARIANTS:
        out[v] = unet.UNet.from_config({**shipped.config.to_dict(), 'precision': v.split()[0]}).eval()
        out[v].load_state_dict(shipped.state_dict())
    return out, sched


def pm(v:list, f='.4f') -> str: return f"{statistics.mean(v):{f}} ± {statistics.stdev(v):{f}}"


def per_call(name:str, seeds:int):
    "Table 1 for the shipped model `name`."
    models, sched = nets(name)
    test = load_dataset('digits', split='test', size=8)
    labels = test.y if models['fp32'].num_classes else None
    print(f"\n### 1. Per network call, `{name}` (predicts {models['fp32'].prediction}), 300 test digits, {seeds} seeds\n")
    print("| t | σ_t | x_t rounding / σ_t | RMS Δv̂ bf16 before | RMS Δv̂ bf16 now | ratio | RMS Δx̂₀ before | RMS Δx̂₀ now |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in TS:
        ab, dv, dx, rnd = sched.alpha_bars[t], {v: [] for v in VARIANTS[1:]}, {v: [] for v in VARIANTS[1:]}, []
        for s in range(seeds):
            tt = torch.full((len(test.x),), t)
            x_t = sched.q_sample(test.x, tt, torch.randn(test.x.shape, generator=torch.Generator().manual_seed(s)))
            rnd.append((x_t.bfloat16().float() - x_t).pow(2).mean().sqrt().item() / (1 - ab).sqrt().item())
            with torch.no_grad():
                ref = models['fp32'](x_t, tt, labels)
                for v in VARIANTS[1:]:
                    with rule(v): d = models[v](x_t, tt, labels) - ref
                    dv[v].append(d.pow(2).mean().sqrt().item())
                    dx[v].append((1 - ab).sqrt().item() * dv[v][-1])      # x0-hat = sqrt(ab) x_t - sqrt(1 - ab) v-hat
        b, a = dv['bf16 before'], dv['bf16 now']
        print(f"| {t} | {(1 - ab).sqrt():.4f} | {statistics.mean(rnd):.3f} | {pm(b)} | {pm(a)} | "
              f"{sum(b) / sum(a):.1f}× | {pm(dx['bf16 before'], '.1e')} | {pm(dx['bf16 now'], '.1e')} |")


def quality(seeds:int):
    "Table 2: both shipped models, DDIM 50, w = 1, 300 samples per seed."
    test, train = load_dataset('digits', split='test'), load_dataset('digits', split='train')
    judge, g = DigitJudge(test.x), torch.Generator().manual_seed(0)
    floor = over_runs([judge(train.x[torch.randperm(len(train), generator=g)[:300]]) for _ in range(10)])
    print(f"\n### 2. Held-out quality: DDIM 50 (η = 0), w = 1, 300 samples × {seeds} seeds, FD to the 300 test digits\n")
    print("| model | variant | FD | recognised | RMS pixel Δ to the fp32 sample (same seed) |")
    print("|---|---|---:|---:|---:|")
    ddim = make_sampler('ddim', 50)
    for name in ('digits-cond', 'digits-uncond'):
        models, sched = nets(name)
        labels = torch.arange(300) % 10 if models['fp32'].num_classes else None
        xs = {}
        for v in VARIANTS:
            with rule(v):
                xs[v] = [sample(models[v], sched, ddim, 300, labels=labels, guidance=1., seed=s, progress=False)
                         for s in range(seeds)]
        for v in VARIANTS:
            r = over_runs([judge(x, labels) for x in xs[v]])
            rec = f"{100 * r['recognised']:.1f} % ± {100 * r['recognised_sd']:.1f} %" if labels is not None else ''
            dpx = [(x - x32).pow(2).mean().sqrt().item() for x, x32 in zip(xs[v], xs['fp32'])]
            print(f"| {name} | {v} | {r['fd']:.3f} ± {r['fd_sd']:.3f} | {rec} | "
                  f"{pm(dpx) if v != 'fp32' else '0'} |")
    print(f"| real training digits (floor), 10 subsets of 300 | | {floor['fd']:.3f} ± {floor['fd_sd']:.3f} | | |")


def speed(repeats:int, seconds:float):
    "Table 3: sampling images/s and training steps/s, the variants in turns."
    models, sched = nets('digits-cond')
    ddim, labels = make_sampler('ddim', 50), torch.arange(300) % 10
    trainers = {v: Trainer(TrainConfig(steps=10**9, sample_every=0, precision=v.split()[0])) for v in VARIANTS}
    batches = {v: tr.batches() for v, tr in trainers.items()}
    for v, tr in trainers.items():
        with rule(v):
            for batch, _ in zip(batches[v], range(5)): tr.train_step(*batch)             # warm-up
            sample(models[v], sched, ddim, 300, labels=labels, guidance=1., seed=0, progress=False)
    samp, train = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for v in VARIANTS:
            with rule(v):
                start = time.perf_counter()
                sample(models[v], sched, ddim, 300, labels=labels, guidance=1., seed=0, progress=False)
                samp[v].append(300 / (time.perf_counter() - start))
                train[v].append(images_per_second(trainers[v], batches[v], seconds) / trainers[v].cfg.batch_size)
    print(f"\n### 3. Speed, {repeats} turns each: sampling (digits-cond, DDIM 50, 300 samples), training (batch 128)\n")
    print("| variant | sampling images/s (median) | range | training steps/s (median) | range | "
          "÷ bf16 before, per turn: sampling | training |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v in VARIANTS:
        rs, rt = ([x / y for x, y in zip(d[v], d['bf16 before'])] for d in (samp, train))
        ratio = lambda r: f"{statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})"
        print(f"| {v} | {statistics.median(samp[v]):.0f} | {min(samp[v]):.0f}–{max(samp[v]):.0f} | "
              f"{statistics.median(train[v]):.2f} | {min(train[v]):.2f}–{max(train[v]):.2f} | {ratio(rs)} | {ratio(rt)} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, default=3, help='noise seeds (table 1) and sample seeds (table 2)')
    p.add_argument('--repeats', type=int, default=7, help='turns per variant in the speed table')
    p.add_argument('--seconds', type=float, default=4.0, help='training wall time per turn')
    p.add_argument('--tables', nargs='+', type=int, choices=(1, 2, 3), default=(1, 2, 3), help='which tables to print')
    p.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    print(machine(), flush=True)
    if 1 in a.tables:
        for name in ('digits-cond', 'digits-uncond'): per_call(name, a.seeds)
    if 2 in a.tables: quality(a.seeds)
    if 3 in a.tables: speed(a.repeats, a.seconds)


if __name__ == '__main__':
    main()
