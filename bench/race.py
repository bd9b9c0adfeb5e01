"""Equal-budget race: ddpm_nb, diffusers and denoising-diffusion-pytorch each train an unconditional digit model for the same time.

    python bench/race.py [--minutes 4] [--n 300] [--threads N] [--only ddpm_nb ddpm_nb16 diffusers lucidrains] [--seed 0]
                         [--precision fp32|bf16]

Needs the bench extra: `pip install -e ".[bench]"` (diffusers, denoising-diffusion-pytorch).

The contestants train an unconditional model on the 1,497 training digits (`digits_split`, in [-1, 1]; 16×16 but
for ddpm_nb's default recipe, see below) for `--minutes` of training time each, on the CPU, then each draws `--n`
samples with 50 DDIM steps (η = 0) from its EMA weights. The course's judge (`ddpm_nb.judge.digit_judge`, trained on the training digits only) scores
all samples alike against the 300 test digits that no contestant saw: Fréchet distance and KID in its feature space
and a classifier score (see `DigitJudge`); `--n` real training digits scored the same way give the real-vs-real
floor. The table shows, per contestant: parameters, optimizer steps done in
the budget, training images/s, the training loss (mean of the last 20 steps), sampling seconds, FD, KID and score.

Fairness rules: the budget counts training time only (data batches, forward, backward, optimizer and EMA updates; not
model construction, sampling or scoring); the contestants run one after the other, never at the same time, with the
same number of torch threads (`--threads`, default torch's); all use batch 128, peak learning rate 1e-3 with a 50-step
linear warm-up, gradient-norm clipping at 1, an EMA of decay 0.999 updated every step (with its library's own warm-up
of the decay), T = 1000 with Ho et al.'s linear betas 1e-4..0.02, models of about 1.63 M parameters at 16×16, and the same
seed for weights, batches and sampling noise, and one precision (`--precision`, fp32 by default): in bf16 each
contestant's forward passes and losses run under CPU bfloat16 autocast, training and sampling alike (ddpm_nb's U-Net
does that inside its forward, the others get a `torch.autocast` around their forward and loss). Each library otherwise
keeps its own defaults, as a user would get them:

- ddpm_nb: `Trainer(TrainConfig(dataset='digits', cond=False, minutes=...))` with everything else default, as lesson
  12b chose it: the digits at their native 8×8 with the `digits8` U-Net (1.19 M), v-prediction, AdamW (fused), cosine
  decay of the learning rate over the time budget to 0.1 of the peak, EMA warm-up min(0.999, (1+n)/(10+n)), and the
  race's precision (`TrainConfig(precision=...)`); its 8×8 samples are judged as the judge reads 8×8 digits, resized
  exactly as the 16×16 data were made. `ddpm_nb16` is the same trainer with the 16×16 `digits` preset (1.63 M),
  like for like with the other two in resolution.
- diffusers: `UNet2DModel` laid out like diffusers' unconditional training example (`train_unconditional.py`), scaled
  down to 16×16: two ResNet layers per block, attention at the next-to-lowest resolution and in the middle block, and
  block_out_channels (32, 64, 64) to reach the same size (other settings default, e.g. 32 GroupNorm groups); the
  example's training loop (`DDPMScheduler.add_noise`, ε MSE), its AdamW settings (betas 0.95/0.999, weight decay 1e-6)
  with `get_constant_schedule_with_warmup`, its `EMAModel` (default decay warm-up (1+n)/(10+n)). Sampling: `DDIMScheduler` (set_timesteps(50), η = 0, its default clipping of x0 to [-1, 1]).
- lucidrains (denoising-diffusion-pytorch): `Unet(dim=24, dim_mults=(1, 2, 4), channels=1)` (its default layout: two
  ResNet blocks per level, linear attention on the outer levels, full attention on the innermost level and in the
  middle), `GaussianDiffusion(objective='pred_noise', beta_schedule='linear', sampling_timesteps=50)`, trained with
  its own loss `diffusion(x)` on images in [0, 1] (it normalises to [-1, 1] itself; samples are mapped back). Its
  `Trainer` wants image folders and accelerate, so a small loop stands in for it with the Trainer's choices where the
  race has no common setting: betas 0.9/0.99 and no weight decay (so AdamW is its Adam), gradient clipping at 1,
  `ema_pytorch.EMA` with its default warm-up (weights copied for 100 steps, then decay 1 - (1+n)^(-2/3)). The race's common settings replace the Trainer's lr 1e-4 without warm-up and EMA beta 0.995 every
  10 steps, which are meant for much longer runs. Sampling: `diffusion.sample` from the EMA copy, its own 50-step DDIM
  (x0 clipped); it shows a tqdm bar on stderr that cannot be turned off.
"""
import argparse, datetime, os, platform, time
from importlib.metadata import version, PackageNotFoundError
import torch
import torch.nn.functional as F
from ddpm_nb.data import load_dataset
from ddpm_nb.metrics import DigitJudge

BATCH, LR, WARMUP, GRAD_CLIP, EMA_DECAY, T, DDIM_STEPS = 128, 1e-3, 50, 1.0, 0.999, 1000, 50


def batches(x, seed):
    "Endless batches of `BATCH` images of `x`, reshuffled every epoch, the last partial batch dropped (a shuffling DataLoader)."
    g = torch.Generator().manual_seed(seed)
    while True:
        yield from x[torch.randperm(len(x), generator=g)[:len(x) // BATCH * BATCH]].split(BATCH)


def train_for(seconds, step):
    "Call `step()` (one optimizer step, returning the loss) until `seconds` of training time are used; the losses and the time taken."
    losses, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds: losses.append(step())
    return losses, time.perf_counter() - t0


def n_params(model): return sum(p.numel() for p in model.parameters())


def tail_mean(losses, k=20): return sum(losses[-k:]) / len(losses[-k:])


def timed_sampling(draw):
    "The samples `draw()` returns, as float32 on the CPU, and the seconds it took."
    t0 = time.perf_counter()
    x = draw()
    return x.float().cpu(), time.perf_counter() - t0


def logged_tail_loss(history, k=20):
    "Mean loss over the last `k` or more steps of a ddpm_nb training log, whose records average windows of steps."
    total = steps = 0
    for prev, rec in reversed(list(zip([{'step': 0}] + history[:-1], history))):
        w = rec['step'] - prev['step']
        total, steps = total + rec['loss'] * w, steps + w
        if steps >= k: break
    return total / steps


def bf16_autocast(precision):
    "bfloat16 autocast on the CPU when the race runs in bf16, nothing in fp32: the same for the libraries without their own."
    return torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16')


def race_ddpm_nb(ds, minutes, n, seed, precision, **settings):
    "ddpm_nb as a user runs it: the Trainer with default settings (or `settings`), then DDIM from its EMA model."
    from ddpm_nb.train import Trainer, TrainConfig
    from ddpm_nb.samplers import DDIM, sample
    tr = Trainer(TrainConfig(dataset='digits', cond=False, minutes=minutes, seed=seed, sample_every=0, ckpt_every=10**9,
                             precision=precision, **settings), out=None)      # its own loading: the training split
    tr.fit(progress=False)
    x, sample_s = timed_sampling(lambda: sample(tr.ema.model, tr.schedule, DDIM(steps=DDIM_STEPS), n, seed=seed, progress=False))
    return dict(params=n_params(tr.model), steps=tr.step, train_s=tr.elapsed, loss=logged_tail_loss(tr.history),
                x=x, sample_s=sample_s, note=f"precision {tr.precision}", batch=tr.cfg.batch_size)


def race_ddpm_nb16(ds, minutes, n, seed, precision):
    "ddpm_nb at the others' 16×16, with the `digits` preset: the same trainer, like for like in resolution."
    return race_ddpm_nb(ds, minutes, n, seed, precision, preset='digits')


def race_diffusers(ds, minutes, n, seed, precision):
    "diffusers' UNet2DModel with the training loop of its unconditional example, then DDIMScheduler from the EMA weights."
    from diffusers import UNet2DModel, DDPMScheduler, DDIMScheduler
    from diffusers.optimization import get_constant_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    torch.manual_seed(seed)
    model = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64, 64),
                        down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D'),
                        up_block_types=('UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'))
    noise_scheduler = DDPMScheduler(num_train_timesteps=T)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_constant_schedule_with_warmup(opt, WARMUP)
    ema = EMAModel(model.parameters(), decay=EMA_DECAY)
    data, g = batches(ds.x, seed), torch.Generator().manual_seed(seed + 1)

    def step():
        x0 = next(data)
        noise, t = torch.randn(x0.shape, generator=g), torch.randint(0, T, (len(x0),), generator=g)
        with bf16_autocast(precision): eps = model(noise_scheduler.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(eps.float(), noise)
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step(); lr_scheduler.step(); ema.step(model.parameters())
        return loss.item()

    model.train()
    losses, train_s = train_for(60 * minutes, step)
    ema.copy_to(model.parameters()); model.eval()
    ddim = DDIMScheduler(num_train_timesteps=T)
    ddim.set_timesteps(DDIM_STEPS)

    @torch.no_grad()
    def draw():
        x = torch.randn((n, 1, 16, 16), generator=torch.Generator().manual_seed(seed))
        for t in ddim.timesteps:
            with bf16_autocast(precision): eps = model(x, t).sample.float()
            x = ddim.step(eps, t, x, eta=0.0).prev_sample
        return x

    x, sample_s = timed_sampling(draw)
    return dict(params=n_params(model), steps=len(losses), train_s=train_s, loss=tail_mean(losses),
                x=x, sample_s=sample_s, note=f'precision {precision}')


def race_lucidrains(ds, minutes, n, seed, precision):
    "denoising-diffusion-pytorch's Unet and GaussianDiffusion with its own loss, then its DDIM sampler from the EMA copy."
    from denoising_diffusion_pytorch import Unet, GaussianDiffusion
    from ema_pytorch import EMA
    torch.manual_seed(seed)                   # it draws t and ε from torch's global generator
    unet = Unet(dim=24, dim_mults=(1, 2, 4), channels=1)
    diffusion = GaussianDiffusion(unet, image_size=16, timesteps=T, sampling_timesteps=DDIM_STEPS,
                                  objective='pred_noise', beta_schedule='linear')
    opt = torch.optim.AdamW(diffusion.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / WARMUP, total_iters=WARMUP)
    ema = EMA(diffusion, beta=EMA_DECAY, update_every=1)
    data = batches((ds.x + 1) / 2, seed)      # it expects images in [0, 1]

    def step():
        with bf16_autocast(precision): loss = diffusion(next(data)).float()
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), GRAD_CLIP)
        opt.step(); warmup.step(); ema.update()
        return loss.item()

    diffusion.train()
    losses, train_s = train_for(60 * minutes, step)
    torch.manual_seed(seed)                   # its sampling noise comes from the global generator too
    def draw():
        with bf16_autocast(precision): return ema.ema_model.sample(batch_size=n).float() * 2 - 1
    x, sample_s = timed_sampling(draw)
    return dict(params=n_params(unet), steps=len(losses), train_s=train_s, loss=tail_mean(losses),
                x=x, sample_s=sample_s, note=f'precision {precision}')


RACERS = {'ddpm_nb': race_ddpm_nb, 'ddpm_nb16': race_ddpm_nb16, 'diffusers': race_diffusers, 'lucidrains': race_lucidrains}


def check_samples(name, x, n):
    "Refuse samples that are not n finite 16×16 (or native 8×8) grey images in [-1, 1]; one line of statistics."
    if tuple(x.shape) not in ((n, 1, 16, 16), (n, 1, 8, 8)):
        raise ValueError(f"{name}: samples of shape {tuple(x.shape)}, expected {(n, 1, 16, 16)} or {(n, 1, 8, 8)}")
    if not torch.isfinite(x).all(): raise ValueError(f"{name}: samples are not all finite")
    if x.min() < -1 - 1e-5 or x.max() > 1 + 1e-5: raise ValueError(f"{name}: samples span [{x.min():.4f}, {x.max():.4f}], not [-1, 1]")
    return f"min {x.min():.3f} max {x.max():.3f} mean {x.mean():.3f} std {x.std():.3f}"


def build_judge():
    "The course's judge against the 300 test digits."
    return DigitJudge(load_dataset('digits', split='test').x)


def load_avg(): return ' '.join(f'{l:.2f}' for l in os.getloadavg()) if hasattr(os, 'getloadavg') else 'n/a'


def machine():
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) \
        if os.path.exists('/proc/cpuinfo') else platform.processor()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    def ver(pkg):
        try: return version(pkg)
        except PackageNotFoundError: return 'not installed'
    info = open('/proc/cpuinfo').read().split() if os.path.exists('/proc/cpuinfo') else []
    flags = ', '.join(f for f in ('avx512_bf16', 'amx_bf16') if f in info) or 'none'
    return (f"{datetime.datetime.now():%Y-%m-%d %H:%M} | {cpu} (bf16 flags: {flags}) | {cores} cores usable | torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads | diffusers {ver('diffusers')} | denoising-diffusion-pytorch "
            f"{ver('denoising-diffusion-pytorch')} | python {platform.python_version()} | load avg {load_avg()}")


def metrics_cells(m): return f"{m['fd']:.2f} | {1e3 * m['kid']:.2f} ± {1e3 * m['kid_std']:.2f} | {m['score']:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--minutes', type=float, default=4.0, help='training time per contestant')
    p.add_argument('--n', type=int, default=300, help='samples per contestant')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--only', nargs='+', choices=list(RACERS), default=list(RACERS), help='run these contestants, in this order')
    p.add_argument('--seed', type=int, default=0, help='seed of weights, batches and sampling noise')
    p.add_argument('--precision', default='fp32', choices=['fp32', 'bf16'],
                   help='one precision for every contestant (bf16: autocast on the CPU; fast only with AVX512-BF16/AMX)')
    a = p.parse_args(argv)
    if a.n < 2: p.error('--n must be at least 2 (KID and FD need two samples)')
    if a.threads: torch.set_num_threads(a.threads)
    ds = load_dataset('digits', split='train')
    judge = build_judge()
    print(machine())
    print(f"race: {a.minutes:g} min of training per contestant on digits {tuple(ds.x.shape)}, batch {BATCH}, seed {a.seed}; "
          f"{a.n} samples each, DDIM {DDIM_STEPS} steps, eta 0; judge: digit_judge against the 300 test digits", flush=True)
    results = {}
    for name in dict.fromkeys(a.only):
        r = RACERS[name](ds, a.minutes, a.n, a.seed, a.precision)
        stats = check_samples(name, r['x'], a.n)
        r.update(judge(r['x']))
        results[name] = r
        print(f"{name} ({r['note']}): {r['steps']} steps in {r['train_s']:.1f} s, sampled in {r['sample_s']:.1f} s; samples {stats}", flush=True)
    print(f"\n{machine()} | precision {a.precision} for every contestant")
    print("\n| contestant | precision | params | steps | img/s | loss | sample s | FD | KID×1e3 | score |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['note'].removeprefix('precision ')} | {r['params']:,} | {r['steps']} | "
              f"{r['steps'] * r.get('batch', BATCH) / r['train_s']:.0f} | {r['loss']:.4f} | "
              f"{r['sample_s']:.1f} | {metrics_cells(r)} |")
    floor = ds.x[torch.randperm(len(ds), generator=torch.Generator().manual_seed(a.seed))[:min(a.n, len(ds))]]
    print(f"\nreal-vs-real floor ({len(floor)} training digits against the test digits): FD | KID×1e3 | score = "
          f"{metrics_cells(judge(floor))}")
    ranked = sorted(results, key=lambda k: results[k]['fd'])
    others = ', '.join(f"{k} {results[k]['fd']:.2f}" for k in ranked[1:])
    print(f"verdict: lowest FD after {a.minutes:g} min of training each: {ranked[0]} ({results[ranked[0]]['fd']:.2f})"
          + (f"; then {others}" if others else ''))
    print(f"load avg at the end: {load_avg()}")


if __name__ == '__main__':
    main()
