"""How fast `sample` draws at each block size (samples per network call), and what 'auto' picks.

    python bench/sample_blocks.py [--ckpt mnist-cond] [--n 1000] [--steps 10] [--rounds 3] [--precision fp32]
    python bench/sample_blocks.py --full          # also: --n samples with DDIM-50 at 'auto', timed once

A CPU slows down when one call's activations no longer fit its caches, so the block size matters for speed as well as
for memory (lesson 11). For each block size in `--blocks` and for 'auto' (`ddpm_nb.samplers.auto_batch_size`), the
script draws `--n` unguided class-conditional samples with DDIM in `--steps` steps and reports image evaluations per
second (n x network calls / seconds): the median and the range over `--rounds` rounds, the variants taking turns in
each round so that a change of the machine's load hits all alike. The first line names the CPU, its bf16 flags, the
threads and the precision; run nothing else on the machine meanwhile.
"""
import argparse, platform, statistics, time
from pathlib import Path
import torch
from ddpm_nb.checkpoint import load_for_sampling
from ddpm_nb.runtime import bf16_is_fast
from ddpm_nb.samplers import DDIM, auto_batch_size, sample


def machine(precision:str) -> str:
    "CPU model, its bf16 flags, threads and precision: the context every number of this script needs."
    info = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    cpu = next((l.split(':', 1)[1].strip() for l in info.splitlines() if l.startswith('model name')),
               platform.processor())
    flags = [f for f in ('avx512_bf16', 'amx_bf16') if f in info.split()]
    return (f"{cpu} | bf16 flags: {', '.join(flags) or 'none'} (bf16 fast: {bf16_is_fast('cpu')}) | "
            f"{torch.get_num_threads()} threads | torch {torch.__version__} | precision {precision}")


def evals_per_second(model, schedule, n:int, steps:int, block) -> float:
    "Image evaluations per second of one run of `sample` with `block` samples per call."
    labels = torch.arange(n) % model.num_classes
    start = time.perf_counter()
    sample(model, schedule, DDIM(steps), n, labels=labels, seed=0, progress=False, batch_size=block)
    return n * steps / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--ckpt', default='mnist-cond', help='a shipped model, checkpoint or run folder')
    p.add_argument('--n', type=int, default=1000, help='samples per run')
    p.add_argument('--steps', type=int, default=10, help='DDIM steps per run')
    p.add_argument('--rounds', type=int, default=3, help='rounds of turns')
    p.add_argument('--blocks', type=int, nargs='*', default=[32, 64, 128, 256, 512, 1024],
                   help="block sizes to time beside 'auto'")
    p.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'auto'])
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: as torch starts)')
    p.add_argument('--full', action='store_true', help="also time --n samples with DDIM-50 at 'auto', once")
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    model, schedule, _ = load_for_sampling(a.ckpt, 'cpu', a.precision)
    auto = auto_batch_size(model.sample_shape)
    print(machine(a.precision))
    print(f"model {a.ckpt}, samples {tuple(model.sample_shape)}; n = {a.n}, DDIM-{a.steps}, unguided; "
          f"'auto' = {auto} samples a call")
    variants = {**{str(b): b for b in a.blocks}, f'auto ({auto})': 'auto'}
    evals_per_second(model, schedule, min(a.n, 64), 2, 'auto')                     # warm-up
    rates = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, block in variants.items(): rates[k].append(evals_per_second(model, schedule, a.n, a.steps, block))
    print("\n| samples per call | image evaluations / s, median | range |")
    print("|---:|---:|---:|")
    for k, r in rates.items(): print(f"| {k} | {statistics.median(r):.0f} | {min(r):.0f}-{max(r):.0f} |")
    if a.full:
        start = time.perf_counter()
        sample(model, schedule, DDIM(50), a.n, labels=torch.arange(a.n) % model.num_classes, seed=0, progress=False)
        s = time.perf_counter() - start
        print(f"\n{a.n} samples, DDIM-50, 'auto': {s:.1f} s, {a.n * 50 / s:.0f} image evaluations / s")


if __name__ == '__main__':
    main()
