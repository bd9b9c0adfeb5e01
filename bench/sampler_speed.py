"""How much the samplers (DDIM, DDPM, DPM-Solver++, Euler, Heun) cost beside the network, on the shipped digits models.

    python bench/sampler_speed.py [--n 64] [--repeats 5] [--threads N]

For each case the script runs `ddpm_nb.samplers.sample` with the network wrapped in a timer, so that one run gives both
its total time and the time spent inside the network's forward passes; the sampler's overhead is the rest, relative to
the network time (median over `--repeats` runs). Measuring both in the same run keeps a shared machine's changing speed
out of the ratio. It also times DDPM with all 1,000 steps against DDIM with 50, and one guided forward pass on a batch of
2B against two passes of B.
Targets (issues 5 and 15): overhead <= 5 % for every sampler; DDIM-50 >= 18x faster than DDPM-1000.
"""
import argparse, datetime, os, platform, statistics, time
import torch
from torch import nn
from ddpm_nb.checkpoint import load_pretrained
from ddpm_nb.samplers import DDIM, DDPM, DPMSolver, Heun, sample


class TimedNet(nn.Module):
    "Wraps a denoiser and adds up the wall time of its forward passes; passes through what `sample` asks of the model."
    def __init__(self, net):
        super().__init__(); self.net, self.seconds, self.calls = net, 0.0, 0
    def forward(self, *args):
        start = time.perf_counter(); out = self.net(*args)
        self.seconds += time.perf_counter() - start; self.calls += 1
        return out
    null_label = property(lambda self: self.net.null_label)
    num_classes = property(lambda self: self.net.num_classes)
    sample_shape = property(lambda self: self.net.sample_shape)
    prediction = property(lambda self: self.net.prediction)   # so that `sample` converts v to eps as for the net


def timed(f):
    start = time.perf_counter(); f(); return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=64, help='samples per run')
    p.add_argument('--repeats', type=int, default=5, help='timed runs per variant (median reported)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    cond, sched, _ = load_pretrained('digits-cond')
    uncond, _, _ = load_pretrained('digits-uncond')
    n, shape = a.n, cond.sample_shape
    labels = torch.arange(n) % 10
    cases = {   # name: (model, sampler, sample kwargs)
        'DDIM 50, unconditional': (uncond, DDIM(steps=50), {}),
        'DDIM 50, guided w=3 (2B)': (cond, DDIM(steps=50), dict(labels=labels, guidance=3.)),
        'DDPM 1000, unconditional': (uncond, DDPM(), {}),
        'DPM-Solver++(2M) 20, unconditional': (uncond, DPMSolver(20), {}),
        'DPM-Solver++(2M) 20, guided w=3 (2B)': (cond, DPMSolver(20), dict(labels=labels, guidance=3.)),
        'Euler 20 (DDIM, karras steps), unconditional': (uncond, DDIM(20, spacing='karras'), {}),
        'Heun 10 (19 calls), unconditional': (uncond, Heun(10), {}),
    }
    print(f"{datetime.date.today()} | {platform.processor() or platform.machine()} | torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"| n = {n}, {a.repeats} runs per variant | load avg {' '.join(f'{l:.2f}' for l in os.getloadavg())}")
    res = {}
    for name, (model, sampler, kw) in cases.items():
        sample(model, sched, sampler, n, seed=0, progress=False, **kw)               # warm-up
        runs = []
        for _ in range(max(1, a.repeats // 2) if isinstance(sampler, DDPM) else a.repeats):
            net = TimedNet(model)
            total = timed(lambda: sample(net, sched, sampler, n, seed=0, progress=False, **kw))
            runs.append((total, net.seconds, net.calls))
        res[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[0][2],
                     statistics.median(r[0] / r[1] - 1 for r in runs))
    print(f"\n| case | network calls | sample, total (s) | inside the network (s) | sampler overhead |")
    print(f"|---|---:|---:|---:|---:|")
    for name, (total, inside, calls, over) in res.items(): print(f"| {name} | {calls} | {total:.2f} | {inside:.2f} | {over:+.2%} |")
    ddpm, ddim = res['DDPM 1000, unconditional'][0], res['DDIM 50, unconditional'][0]
    per_call = {k: res[k][1] / res[k][2] for k in ('DDPM 1000, unconditional', 'DDIM 50, unconditional')}
    (_, _, c_ddpm, o_ddpm), (_, _, c_ddim, o_ddim) = res['DDPM 1000, unconditional'], res['DDIM 50, unconditional']
    print(f"\nDDPM-1000 / DDIM-50 wall time: {ddpm / ddim:.1f}x measured (target >= 18x); the network's time per call varied "
          f"from {min(per_call.values()) * 1e3:.0f} to {max(per_call.values()) * 1e3:.0f} ms between the two runs on this machine, and at equal time "
          f"per call the ratio is {c_ddpm * (1 + o_ddpm) / (c_ddim * (1 + o_ddim)):.1f}x")
    x2, x1 = torch.randn(2 * n, *shape), torch.randn(n, *shape)
    t2, t1, y2 = torch.full((2 * n,), 500), torch.full((n,), 500), torch.cat([labels, torch.full_like(labels, cond.null_label)])
    with torch.no_grad():
        one = statistics.median(timed(lambda: [cond(x2, t2, y2) for _ in range(20)]) for _ in range(a.repeats)) / 20
        two = statistics.median(timed(lambda: [(cond(x1, t1, labels), cond(x1, t1, y2[n:])) for _ in range(20)]) for _ in range(a.repeats)) / 20
    print(f"guidance: one forward of 2B = {one * 1e3:.1f} ms, two forwards of B = {two * 1e3:.1f} ms ({two / one:.2f}x)")


if __name__ == '__main__':
    main()
