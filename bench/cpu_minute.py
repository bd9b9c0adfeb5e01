"""Quality per CPU-minute: train a class-conditional digits model on a budget, then score it on held-out digits.

    python bench/cpu_minute.py [--minutes 5 | --steps N] [--precision fp32] [--threads 2] [--n 1000] [--guidance 1]
                               [--set key=value ...] [--spacing uniform|trailing|quadratic] [--ckpt RUN]

One run of `Trainer(TrainConfig(minutes=..., precision=..., sample_every=0, **overrides))` on the 1,497 training digits
(previews off, so the budget is training only), then `--n` DDIM-50 samples from the EMA weights at guidance
`--guidance`, the classes in turn, scored by `ddpm_nb.budget.held_out_score` against the 300 test digits (with
`--set dataset=mnist5k`: the 4,000 training and 1,000 test MNIST digits at 28×28, and their judge): the fraction
the course's judge recognises as the requested digit (± its standard error) and FD, beside FD's floor at the same N
(`fd_floor`: `--n` real training digits, mean ± sd over 3 draws), plus a grid of the first 40 samples. `--set` changes
any `TrainConfig` field, e.g. `--set preset=digits prediction=v`: one lever per run (lesson 12b). `--steps N` trains
for a step budget instead of wall time, so that the result does not depend on the load of the machine; the levers
that change what a step costs are timed by `train_speed.py`. The first line names the CPU, its bf16 flags, the
threads and the precision; run nothing else on the machine meanwhile. `--ckpt` scores an earlier run without
training it further (for sampling levers such as `--spacing`).
"""
import argparse, ast, os, platform, tempfile, time
from pathlib import Path
import torch
from ddpm_nb.budget import held_out_score, fd_floor
from ddpm_nb.checkpoint import load_model
from ddpm_nb.runtime import bf16_is_fast
from ddpm_nb.samplers import DDIM, SPACINGS
from ddpm_nb.train import Trainer, TrainConfig
from ddpm_nb.viz import save_samples


def machine() -> str:
    "CPU model, its bf16 flags, threads: the context every number of this script needs."
    info = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    cpu = next((l.split(':', 1)[1].strip() for l in info.splitlines() if l.startswith('model name')), platform.processor())
    flags = [f for f in ('avx512_bf16', 'amx_bf16') if f in info.split()]
    return (f"{cpu} | bf16 flags: {', '.join(flags) or 'none'} (bf16 fast: {bf16_is_fast('cpu')}) | "
            f"{torch.get_num_threads()} threads | torch {torch.__version__}")


def parse_sets(pairs:list) -> dict:
    "`key=value` pairs to TrainConfig overrides (values read as Python literals where they parse)."
    out = {}
    for p in pairs:
        if '=' not in p: raise SystemExit(f"--set expects key=value, got {p!r}")
        k, v = p.split('=', 1)
        try: out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError): out[k] = v
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--minutes', type=float, default=5.0, help='training time (previews off)')
    p.add_argument('--steps', type=int, default=None, help='train for this many steps instead of --minutes')
    p.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'auto'], help='training and sampling precision')
    p.add_argument('--threads', type=int, default=2, help='torch threads')
    p.add_argument('--n', type=int, default=1000, help='samples scored')
    p.add_argument('--guidance', type=float, default=1.0, help='classifier-free guidance weight of the samples')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='TrainConfig overrides')
    p.add_argument('--spacing', default='uniform', choices=list(SPACINGS), help="DDIM's timesteps")
    p.add_argument('--ckpt', default=None, help='score this run folder instead of training a new one')
    p.add_argument('--out', default=None, help='run folder (default: a temporary one)')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    budget = dict(minutes=a.minutes) if a.steps is None else dict(steps=a.steps)
    cfg = TrainConfig(**budget, precision=a.precision, sample_every=0, **parse_sets(a.set))
    print(machine(), f"| precision {a.precision}", flush=True)
    out = Path(a.ckpt) if a.ckpt else Path(a.out or tempfile.mkdtemp()) / 'run'
    if a.ckpt: trainer = Trainer.from_checkpoint(out)                    # scored as it stands, not trained further
    else: trainer = Trainer(cfg, out=out); print(trainer.describe(), flush=True); trainer.fit(progress=False)
    model, schedule, _ = load_model(out)                # its config keeps the run's precision: sampling uses it too
    start = time.perf_counter()
    dataset = trainer.cfg.dataset
    r = held_out_score(model, schedule, a.n, a.guidance, DDIM(50, spacing=a.spacing), dataset=dataset)
    sample_s, floor = time.perf_counter() - start, fd_floor(a.n, dataset=dataset)
    grid = save_samples(r['x'][:40], None, out.parent / 'samples.png')       # each digit enlarged to 48 px or more
    print("\n| steps | train img/s | final loss | sample+score s | recognised | FD | floor FD (same N) | FD / floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {trainer.step} | {trainer.step * trainer.cfg.batch_size / trainer.elapsed:.0f} | "
          f"{trainer.history[-1]['loss']:.4f} | {sample_s:.1f} | {r['recognised']:.1%} ± {r['recognised_se']:.1%} | "
          f"{r['fd']:.3f} | {floor['fd']:.3f} ± {floor['fd_sd']:.3f} | {r['fd'] / floor['fd']:.2f} |")
    budget = f"{trainer.cfg.minutes:g} min" if trainer.cfg.steps is None else f"{trainer.cfg.steps} steps"
    print(f"settings: {budget}, precision {trainer.precision}, spacing {a.spacing}, guidance {a.guidance:g}, n {a.n}, "
          f"overrides {parse_sets(a.set) or 'none'}{'; scored ' + a.ckpt if a.ckpt else ''}; grid: {grid}")

if __name__ == '__main__':
    main()
