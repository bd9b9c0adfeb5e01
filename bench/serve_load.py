"""The sampling service under load, on loopback: statuses, memory, /health latency, and batching's throughput.

    flock /tmp/cpu.lock python bench/serve_load.py [--requests 500] [--clients 50] [--precision fp32] [--seed 0]

Starts `ddpm_nb_serve --ckpt digits-cond` on a free loopback port (`--precision`, and any `--serve-args`, passed on),
warms it up, then:

1. **load**: `--clients` concurrent async clients send `--requests` requests, a seeded mix of valid ones (POST /sample,
   GET /sample.png, POST /edit; a few images, few steps), invalid ones (fields out of range or unknown, a label the
   model lacks, eta for an ODE solver, an image that is not base64) and over-limit ones (fine fields whose cost passes
   the server's cap). Every valid request must be answered 200 or a deliberate 503 (with Retry-After), every invalid or
   over-limit one 422 (the over-limit ones naming `cost`); anything else is counted as wrong. The server's RSS after the
   run is compared with its RSS after the warm-up.
2. **throughput**: `--singles` requests of one image each (seeds 0, 1, ...), first one at a time, then from 16
   concurrent clients (a 503 is retried after its Retry-After); the ratio of the two rates, and whether every seed gave the same PNG bytes both ways.

Throughout, a separate process (so that the clients' work does not delay it) asks for /health every 20 ms on its own
connection and reports the latencies per phase. The server's /metrics are read at the end and checked against the
statuses the clients saw. Benchmarks, not tests: it prints tables and asserts nothing; the last line says whether each
target of issue 17 was met. Run nothing else meanwhile; it takes about two minutes on 2 cores.
"""
import argparse, asyncio, base64, io, json, os, random, socket, statistics, subprocess, sys, textwrap, time
from collections import Counter
import httpx
from cpu_minute import machine

PROBE = textwrap.dedent('''
    import http.client, json, sys, time
    conn, out = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=30), {}
    phase = 'start'
    while True:
        t0 = time.perf_counter()
        try: conn.request('GET', '/health'); r = conn.getresponse(); r.read()
        except OSError: break                                       # the server is gone
        out.setdefault(phase, []).append((time.perf_counter() - t0, r.status))
        try: phase = open(sys.argv[2]).read().strip() or phase
        except FileNotFoundError: pass
        if phase == 'stop': break
        time.sleep(0.02)
    print(json.dumps(out))
''')


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def rss_mb(pid:int) -> float:
    "Resident memory of process `pid`, in MB."
    for line in open(f'/proc/{pid}/status'):
        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024
    raise RuntimeError(f'no VmRSS for process {pid}')


def digit_png() -> str:
    "A held-out test digit as a base64 PNG: the image the edit requests send."
    from PIL import Image
    from ddpm_nb.data import load_dataset
    d = load_dataset('digits', size=8, split='test').x[0, 0]
    buf = io.BytesIO()
    Image.fromarray(((d + 1) * 127.5).round().byte().numpy()).save(buf, 'PNG')
    return base64.b64encode(buf.getvalue()).decode()


def payloads(n:int, rng:random.Random, image:str) -> list:
    "`n` requests: (kind, method, path, body or query) with kind 'valid', 'invalid' or 'over' (the cost cap)."
    invalid = [{'n': 0}, {'n': 65}, {'label': 10}, {'sampler': 'dpm++', 'eta': 0.5}, {'foo': 1}, {'steps': 5000},
               {'guidance': -1}, {'sampler': 'plms'}, {'seed': -1}]
    over = [{'sampler': 'ddpm', 'n': 21}, {'sampler': 'ddim', 'steps': 1000, 'n': 11, 'guidance': 2},    # the default
            {'n': 64, 'steps': 400}]                                      # cap is 20,000 evaluations; DDPM takes T
    out = []
    for _ in range(n):
        kind = rng.choices(['valid', 'invalid', 'over'], [0.6, 0.25, 0.15])[0]
        if kind == 'valid':
            r = {'n': rng.randint(1, 4), 'sampler': rng.choice(['dpm++', 'ddim', 'euler', 'heun']),
                 'steps': rng.randint(3, 8), 'seed': rng.randrange(1000)}
            if rng.random() < 0.5: r['label'] = rng.randrange(10)
            route = rng.choices(['/sample', '/sample.png', '/edit'], [0.45, 0.35, 0.2])[0]
            if route == '/edit': r = {'image': image, 'strength': 0.4, **r}
        elif kind == 'invalid':
            r, route = dict(rng.choice(invalid)), rng.choice(['/sample', '/sample.png'])
            if rng.random() < 0.15: r, route = {'image': 'not base64!'}, '/edit'
        else: r, route = dict(rng.choice(over)), rng.choice(['/sample', '/sample.png', '/edit'])
        if kind == 'over' and route == '/edit': r = {'image': image, 'strength': 1.0, **r}
        out.append((kind, 'GET' if route == '/sample.png' else 'POST', route, r))
    return out


async def send(client:httpx.AsyncClient, method:str, route:str, r:dict) -> httpx.Response:
    if method == 'GET': return await client.get(route, params=r)
    return await client.post(route, json=r)


async def run_load(base:str, jobs:list, clients:int) -> tuple:
    "Send `jobs` from `clients` workers; (kind, status, detail loc) per job, and the wall time."
    queue, seen = asyncio.Queue(), []
    for j in jobs: queue.put_nowait(j)
    async def worker(client):
        while not queue.empty():
            kind, method, route, r = queue.get_nowait()
            resp = await send(client, method, route, r)
            loc = resp.json()['detail'][0]['loc'][-1] if resp.status_code == 422 else None
            retry = resp.headers.get('retry-after') if resp.status_code == 503 else None
            seen.append((kind, route, resp.status_code, loc, retry))
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=httpx.Limits(max_connections=clients)) as c:
        await asyncio.gather(*(worker(c) for _ in range(clients)))
    return seen, time.perf_counter() - start


async def run_singles(base:str, seeds:range, clients:int) -> tuple:
    "One-image PNG requests for `seeds` from `clients` concurrent clients: {seed: png bytes}, wall time."
    queue, pngs = asyncio.Queue(), {}
    for s in seeds: queue.put_nowait(s)
    async def worker(client):
        while not queue.empty():
            s = queue.get_nowait()
            while (resp := await client.get('/sample.png', params={'n': 1, 'seed': s, 'label': s % 10})).status_code == 503:
                await asyncio.sleep(float(resp.headers['retry-after']))          # full: come back as told
            resp.raise_for_status(); pngs[s] = resp.content
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=300) as c:
        await asyncio.gather(*(worker(c) for _ in range(clients)))
    return pngs, time.perf_counter() - start


def pct(v:list, q:float) -> float: return sorted(v)[min(len(v) - 1, int(q * len(v)))] * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--requests', type=int, default=500); p.add_argument('--clients', type=int, default=50)
    p.add_argument('--singles', type=int, default=48); p.add_argument('--precision', default='fp32')
    p.add_argument('--seed', type=int, default=0); p.add_argument('--serve-args', default='')
    a = p.parse_args()
    port, flag = free_port(), f'/tmp/serve_load_phase.{os.getpid()}'
    base = f'http://127.0.0.1:{port}'
    cmd = ['ddpm_nb_serve', '--ckpt', 'digits-cond', '--port', str(port), '--precision', a.precision,
           *a.serve_args.split()]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(120):
            try:
                if httpx.get(f'{base}/health', timeout=1).status_code == 200: break
            except httpx.TransportError: time.sleep(0.5)
        else: sys.exit(f'the server did not start: {" ".join(cmd)}\n{server.stderr.read()}')
        print(machine(), f'| server: {" ".join(cmd[1:])}')
        limits = httpx.get(f'{base}/info').json()['limits']
        print('limits:', {k: limits[k] for k in ('max_cost', 'batch', 'queue', 'timeout', 'rows')})
        rng, image = random.Random(a.seed), digit_png()
        asyncio.run(run_load(base, [j for j in payloads(200, rng, image) if j[0] == 'valid'], 16))   # warm-up
        rss_warm = rss_mb(server.pid)
        with open(flag, 'w') as f: f.write('load')
        probe = subprocess.Popen([sys.executable, '-c', PROBE, str(port), flag], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        seen, load_s = asyncio.run(run_load(base, payloads(a.requests, rng, image), a.clients))
        rss_after = rss_mb(server.pid)
        with open(flag, 'w') as f: f.write('one at a time')
        seq, seq_s = asyncio.run(run_singles(base, range(a.singles), 1))
        with open(flag, 'w') as f: f.write('16 clients')
        par, par_s = asyncio.run(run_singles(base, range(a.singles), 16))
        with open(flag, 'w') as f: f.write('stop')
        health = json.loads(probe.communicate(timeout=60)[0])
        scraped = httpx.get(f'{base}/metrics').text
    finally:
        with open(flag, 'w') as f: f.write('stop')
        server.terminate(); server.wait(timeout=30)
        if os.path.exists(flag): os.remove(flag)
    report(a, seen, load_s, rss_warm, rss_after, seq, seq_s, par, par_s, health, scraped)


def report(a, seen, load_s, rss_warm, rss_after, seq, seq_s, par, par_s, health, scraped):
    "Print the tables and the verdict."
    print(f"\n### Load: {a.requests} requests from {a.clients} clients in {load_s:.1f} s\n")
    print('| kind | route | status | count |\n|---|---|---:|---:|')
    counts = Counter((k, r, s) for k, r, s, _, _ in seen)
    for (k, r, s), c in sorted(counts.items()): print(f'| {k} | {r} | {s} | {c} |')
    wrong = [x for x in seen if (x[0] == 'valid' and x[2] not in (200, 503)) or (x[0] != 'valid' and x[2] != 422)
             or (x[0] == 'over' and x[3] != 'cost') or (x[2] == 503 and not x[4])]
    print(f"\nwrong answers: {len(wrong)} {wrong[:5]}")
    grown = rss_after / rss_warm - 1
    print(f"server RSS: {rss_warm:.0f} MB after warm-up, {rss_after:.0f} MB after the load ({grown:+.1%})")
    served = sum(1 for line in scraped.splitlines() if line.startswith('ddpm_nb_requests_total'))
    total = sum(float(l.split()[-1]) for l in scraped.splitlines() if l.startswith('ddpm_nb_requests_total'))
    print(f"/metrics: {served} route/status series, {total:.0f} requests counted")
    same = seq == par
    print(f"\n### Throughput: {a.singles} requests of one image (dpm++ 20 steps, w = 1: one row a call)\n")
    print('| clients | seconds | requests/s |\n|---:|---:|---:|')
    print(f'| 1 | {seq_s:.1f} | {a.singles / seq_s:.2f} |\n| 16 | {par_s:.1f} | {a.singles / par_s:.2f} |')
    speedup = seq_s / par_s
    print(f"\nspeed-up {speedup:.2f}x; the same PNG for every seed both ways: {same}")
    print("\n### /health from a separate process, every 20 ms\n")
    print('| phase | probes | median ms | p99 ms | max ms | not 200 |\n|---|---:|---:|---:|---:|---:|')
    worst = 0.
    for phase, v in health.items():
        lat = [s for s, _ in v]
        if phase != 'start': worst = max(worst, pct(lat, 0.99))
        print(f'| {phase} | {len(v)} | {statistics.median(lat) * 1000:.1f} | {pct(lat, 0.99):.1f} | '
              f'{max(lat) * 1000:.1f} | {sum(st != 200 for _, st in v)} |')
    print(f"\ntargets: no wrong status {not wrong} | RSS within 10 % {abs(grown) <= 0.1} | /health p99 < 50 ms "
          f"{worst < 50} | 16 clients >= 3x {speedup >= 3} | same images {same}")


if __name__ == '__main__': main()
