"""Training speed of recipe variants, measured in turns so that they all see the same machine.

    python bench/train_speed.py [--seconds 10] [--rounds 5] [--variant NAME:key=value,key=value ...]

Each variant is a `Trainer` on the training digits (TrainConfig overrides after the colon, comma-separated;
`threads=N` sets torch's threads for that variant). After 5 warm-up steps each, `ddpm_nb.budget.training_speed`
times them in turns: every round, each trains for `--seconds` of wall time (real batches, the full `train_step`:
forward, backward, AdamW, EMA). The table gives the median images/s over `--rounds` with the range: load that
changes slowly hits all variants alike, and a wide range means it changed within a round. The default variants are
the levers of lesson 12b that change the cost of a step. The first line names the CPU, its bf16 flags and threads.
"""
import argparse, statistics
import torch
from ddpm_nb.budget import training_speed
from ddpm_nb.train import Trainer, TrainConfig
from cpu_minute import machine, parse_sets

DEFAULT_VARIANTS = ['digits 16x16 fp32:preset=digits,precision=fp32', 'digits 16x16 bf16:preset=digits,precision=bf16',
                    'digits 16x16 fp32, 1 thread:preset=digits,precision=fp32,threads=1',
                    'digits8 8x8 fp32:precision=fp32', 'digits8 8x8 bf16:precision=bf16',
                    'digits8 8x8 fp32, 1 thread:precision=fp32,threads=1',
                    'digits8 8x8 fp32, batch 64:precision=fp32,batch_size=64']


def parse_variant(spec:str, threads:int) -> tuple:
    "'name:key=value,...' -> (name, TrainConfig overrides, threads: `threads` unless the spec sets them)."
    name, _, rest = spec.partition(':')
    kv = dict(p.split('=', 1) for p in rest.split(',') if p)
    threads = int(kv.pop('threads', threads))
    return name, parse_sets([f'{k}={v}' for k, v in kv.items()]), threads


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seconds', type=float, default=10.0, help='wall time of each window')
    p.add_argument('--rounds', type=int, default=5, help='windows per variant')
    p.add_argument('--variant', nargs='*', default=DEFAULT_VARIANTS, metavar='NAME:key=value,...')
    a = p.parse_args(argv)
    print(machine(), flush=True)
    trainers, threads, threads0 = {}, {}, torch.get_num_threads()
    for spec in a.variant:
        name, train, threads[name] = parse_variant(spec, threads0)
        torch.set_num_threads(threads[name])
        tr = trainers[name] = Trainer(TrainConfig(steps=10**9, sample_every=0, **train))
        for batch, _ in zip(tr.batches(), range(5)): tr.train_step(*batch)   # warm-up: allocations, oneDNN kernels
    speed = training_speed(trainers, a.seconds, a.rounds, threads)
    first = next(iter(speed)); base = statistics.median(speed[first])
    print(f"\n| variant | threads | batch | images/s (median) | range | steps/min | vs {first} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rates in speed.items():
        m, tr = statistics.median(rates), trainers[name]
        print(f"| {name} | {threads[name]} | {tr.cfg.batch_size} | {m:.0f} | {min(rates):.0f}–{max(rates):.0f} | "
              f"{60 * m / tr.cfg.batch_size:.0f} | {m / base:.2f}× |")


if __name__ == '__main__':
    main()
