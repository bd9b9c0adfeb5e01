"""Training and inference throughput of ddpm_nb's U-Net against diffusers' UNet2DModel at the same size and layout.

    python bench/unet_throughput.py [--preset digits] [--batch-size 128] [--seconds 2] [--repeats 5]
                                    [--set key=value ...] [--ablations] [--compile]

Both models are built from one `UNetConfig` (a preset plus `--set` overrides): same channels per level, blocks per level,
attention resolutions and heads, GroupNorm groups, FiLM time conditioning (diffusers' `resnet_time_scale_shift='scale_shift'`).
Each variant trains with the ε-prediction MSE loss and AdamW (fused) on a fixed batch of synthetic images (fresh noise and timesteps
every step), and runs inference as a forward pass under `no_grad`. Every variant is warmed up, then the variants take turns
in timed windows of `--seconds`, `--repeats` times, so a slow patch on a shared machine hits all of them alike; the table
shows the median and the best window's images/s (and the worst in brackets). On a machine shared with other jobs the best
windows are the better estimate of the uncontended speed; the two agree on a quiet machine.
Needs the bench extra: `pip install -e ".[bench]"` (diffusers).
"""
import argparse, ast, datetime, os, platform, statistics, time
from contextlib import nullcontext
from dataclasses import replace
import torch
import torch.nn.functional as F
import ddpm_nb.unet as unet
from ddpm_nb.unet import UNet, UNetConfig, PRESETS
from ddpm_nb.attention import SelfAttention
from ddpm_nb.runtime import bf16_is_fast


def diffusers_unet(cfg:UNetConfig):
    "diffusers' UNet2DModel laid out like `UNet.from_config(cfg)`."
    from diffusers import UNet2DModel
    if cfg.num_classes is not None: raise ValueError("the benchmark compares unconditional models: leave num_classes unset")
    chans, res = cfg.level_channels, cfg.resolutions
    attn_chs = {c for c, r in zip(chans, res) if r in cfg.attn_resolutions} | {chans[-1]}
    if len({c // cfg.num_heads for c in attn_chs}) > 1:
        print(f"note: diffusers takes one attention_head_dim; head counts differ from ours at some attention levels")
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
        block_out_channels=tuple(chans), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple('AttnDownBlock2D' if r in cfg.attn_resolutions else 'DownBlock2D' for r in res),
        up_block_types=tuple('AttnUpBlock2D' if r in cfg.attn_resolutions else 'UpBlock2D' for r in reversed(res)),
        norm_num_groups=cfg.groups, attention_head_dim=chans[-1] // cfg.num_heads, dropout=cfg.dropout,
        resnet_time_scale_shift='scale_shift', add_attention=True)


class Variant:
    "One model + optimizer + fixed batch, with a training step and an inference step."
    def __init__(self, name, lib, cfg, bf16, batch_size, layout=None, bf16_attention=False, compile=False):
        self.name, self.lib, self.bf16, self.bf16_attention = name, lib, bf16, bf16_attention
        torch.manual_seed(0)
        self.model = UNet(replace(cfg, precision='fp32')) if lib == 'ddpm_nb' else diffusers_unet(cfg)
        self.params = sum(p.numel() for p in self.model.parameters())
        B, C, S = batch_size, cfg.in_channels, cfg.image_size
        self.x0 = torch.rand(B, C, S, S) * 2 - 1                      # stands in for a batch of images in [-1, 1]
        self.alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)  # linear schedule, T = 1000 (Ho et al. 2020)
        self.t = torch.randint(0, 1000, (B,))
        # layout None: each library's own choice (ours: channels-last on CPU when GroupNorm groups are >= 16 channels wide;
        # diffusers: NCHW); 'channels_last' or 'nchw' forces one (weights and input)
        if layout == 'nchw' and lib == 'ddpm_nb': self.model.uses_channels_last = lambda device: False
        if layout is not None:
            self.model = self.model.to(memory_format=torch.channels_last if layout == 'channels_last' else torch.contiguous_format)
        self.fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
        net = torch.compile(self.model) if compile else self.model
        self.forward = (lambda x, t: net(x, t).sample) if lib == 'diffusers' else net
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        self.train_ips, self.infer_ips = [], []

    def context(self):
        ac = torch.autocast('cpu', dtype=torch.bfloat16) if self.bf16 else nullcontext()
        if not self.bf16_attention: return ac
        # ablation: run our attention blocks in bf16 like the rest, instead of float32 (see the notebook); the first
        # convolution and the output layers stay in float32
        class Patch:
            def __enter__(s):
                s.ac, s.orig = ac.__enter__(), unet._in_fp32
                unet._in_fp32 = lambda f, h, dtype=None: f(h) if isinstance(f, SelfAttention) else s.orig(f, h, dtype)
            def __exit__(s, *a): unet._in_fp32 = s.orig; return ac.__exit__(*a)
        return Patch()

    def noisy_batch(self):
        t = torch.randint(0, 1000, self.t.shape)
        eps = torch.randn_like(self.x0)
        ab = self.alpha_bar[t][:, None, None, None]
        xt = (ab.sqrt() * self.x0 + (1 - ab).sqrt() * eps).contiguous(memory_format=self.fmt)
        return xt, t, eps

    def train_step(self):
        xt, t, eps = self.noisy_batch()
        with self.context(): out = self.forward(xt, t)
        loss = F.mse_loss(out.float(), eps)
        self.opt.zero_grad(set_to_none=True); loss.backward(); self.opt.step()

    def infer_step(self):
        xt, t, _ = self.noisy_batch()
        with torch.no_grad(), self.context(): self.forward(xt, t)


def timed(step, seconds, batch_size):
    "Images/s of `step` over a window of at least `seconds` (and at least one step)."
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds: step(); n += 1
    return n * batch_size / (time.perf_counter() - t0)


def machine():
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) \
        if os.path.exists('/proc/cpuinfo') else platform.processor()
    import diffusers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    load = ' '.join(f'{l:.2f}' for l in os.getloadavg()) if hasattr(os, 'getloadavg') else 'n/a'
    return (f"{datetime.date.today()} | {cpu} | {cores} cores usable | bf16 native: {bf16_is_fast('cpu')} | torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads | diffusers {diffusers.__version__} | python {platform.python_version()} | load avg {load}")


def parse_overrides(items):
    out = {}
    for item in items:
        k, _, v = item.partition('=')
        try: out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError): out[k] = v
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', default='digits', choices=list(PRESETS))
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--seconds', type=float, default=2.0, help='length of one timed window')
    p.add_argument('--repeats', type=int, default=5, help='timed windows per variant and mode (median reported)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='UNetConfig overrides, e.g. groups=32 attn_resolutions=(8,)')
    p.add_argument('--ablations', action='store_true', help='also time ours with bf16 attention and in NCHW, and diffusers channels-last')
    p.add_argument('--compile', action='store_true', help='also time ours under torch.compile (slow to compile)')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    cfg = UNetConfig.preset(a.preset, **parse_overrides(a.set))
    B = a.batch_size
    variants = [Variant(f'{lib} {prec}', lib, cfg, prec == 'bf16', B) for prec in ('fp32', 'bf16') for lib in ('ddpm_nb', 'diffusers')]
    if a.ablations:
        variants += [Variant('ddpm_nb bf16, attention in bf16', 'ddpm_nb', cfg, True, B, bf16_attention=True),
                     Variant('ddpm_nb bf16, NCHW', 'ddpm_nb', cfg, True, B, layout='nchw'),
                     Variant('ddpm_nb fp32, NCHW', 'ddpm_nb', cfg, False, B, layout='nchw'),
                     Variant('diffusers bf16, channels_last', 'diffusers', cfg, True, B, layout='channels_last'),
                     Variant('diffusers fp32, channels_last', 'diffusers', cfg, False, B, layout='channels_last')]
    if a.compile: variants.append(Variant('ddpm_nb bf16, torch.compile', 'ddpm_nb', cfg, True, B, compile=True))
    print(machine())
    print(f"preset {a.preset!r} {cfg.to_dict()}; optimizer AdamW (fused)")
    ours, theirs = variants[0].params, variants[1].params
    print(f"parameters: ddpm_nb {ours:,} | diffusers {theirs:,} ({(ours - theirs) / theirs:+.2%})")
    assert abs(ours - theirs) <= 0.1 * theirs, "parameter counts differ by more than 10%"
    t0 = time.perf_counter()
    for v in variants:                                              # warm-up (and compilation)
        for _ in range(3): v.train_step(); v.infer_step()
    print(f"warm-up {time.perf_counter() - t0:.0f} s; timing {len(variants)} variants x {a.repeats} windows of {a.seconds} s", flush=True)
    for _ in range(a.repeats):
        for v in variants:
            v.train_ips.append(timed(v.train_step, a.seconds, B))
            v.infer_ips.append(timed(v.infer_step, a.seconds, B))
    med = statistics.median
    cell = lambda xs: f"{med(xs):5.0f} / {max(xs):5.0f} ({min(xs):.0f})"
    print(f"\nbatch {B}, {cfg.image_size}x{cfg.image_size}x{cfg.in_channels}; images/s over {a.repeats} windows: median / best (worst)")
    print(f"| {'variant':34s} | {'train img/s':>20s} | {'inference img/s':>20s} |")
    print(f"|{'-' * 36}|{'-' * 22}|{'-' * 22}|")
    for v in variants: print(f"| {v.name:34s} | {cell(v.train_ips):>20s} | {cell(v.infer_ips):>20s} |")
    by = {v.name: v for v in variants}
    print("\nratios ours / diffusers (median windows; best windows in brackets):")
    for ours_, theirs_ in [('ddpm_nb fp32', 'diffusers fp32'), ('ddpm_nb bf16', 'diffusers bf16'), ('ddpm_nb bf16', 'diffusers fp32')]:
        r = {(attr, f): f(getattr(by[ours_], attr)) / f(getattr(by[theirs_], attr)) for attr in ('train_ips', 'infer_ips') for f in (med, max)}
        print(f"  {ours_} / {theirs_}: train {r['train_ips', med]:.2f}x ({r['train_ips', max]:.2f}x), "
              f"inference {r['infer_ips', med]:.2f}x ({r['infer_ips', max]:.2f}x)")
    load = ' '.join(f'{l:.2f}' for l in os.getloadavg()) if hasattr(os, 'getloadavg') else 'n/a'
    print(f"load avg at the end: {load}")


if __name__ == '__main__':
    main()
