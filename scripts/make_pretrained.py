"""Train the digits models shipped in `ddpm_nb/pretrained/` with the `ddpm_nb_train` command, then export each
(EMA weights in float16) with a model card. The budget is a number of steps, so the models do not depend on how
fast or how busy the machine is; both train on the 1,497 training digits (`ddpm_nb.data.digits_split`), never on
the 300 test digits that every quality number is measured against.

    python scripts/make_pretrained.py --steps 3000
    python scripts/make_pretrained.py --measure-only     # re-measure the shipped models and rewrite their cards
"""
import argparse, datetime, json, os, platform, subprocess, sys
from pathlib import Path
import torch
from ddpm_nb.checkpoint import PRETRAINED_DIR, export_model, load_checkpoint, load_pretrained
from ddpm_nb.data import load_dataset
from ddpm_nb.metrics import DigitJudge, memorisation, over_runs
from ddpm_nb.samplers import DDIM, DEFAULT_GUIDANCE, sample
from ddpm_nb.train import DEFAULT_PRESETS

MODELS = {'digits-cond': [], 'digits-uncond': ['--no-cond']}

def machine() -> str:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor()) \
        if Path('/proc/cpuinfo').exists() else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}"

SEEDS, N = (0, 1, 2), 300

def measure(name:str) -> str:
    "The card's 'Measured' section: the shipped model's DDIM-50 samples scored against the 300 test digits."
    model, schedule, _ = load_pretrained(name)
    size = model.config.image_size                       # memorisation compares images at the model's own size
    train, test = (load_dataset('digits', split=s, size=size) for s in ('train', 'test'))
    judge, g = DigitJudge(test.x), torch.Generator().manual_seed(0)
    floor = over_runs([judge(train.x[torch.randperm(len(train), generator=g)[:N]]) for _ in range(5)])
    pm = lambda r, k, f='.3f': f"{r[k]:{f}} ± {r[k + '_sd']:{f}}"
    lines = [f"Against the 300 test digits that neither this model nor the judge (`ddpm_nb.judge.digit_judge`) saw; "
             f"DDIM with 50 steps (η = 0), {N} samples per seed, mean ± standard deviation over seeds {SEEDS}; "
             f"measured on {machine()}.", "",
             f"- Real floor ({N} training digits, 5 draws): FD {pm(floor, 'fd')}, classifier score {pm(floor, 'score', '.2f')}"]
    cond = model.num_classes is not None
    for w in (sorted({1.0, 1.5, DEFAULT_GUIDANCE}) if cond else (1.0,)):
        labels = torch.arange(N) % 10 if cond else None
        xs = [sample(model, schedule, DDIM(50), N, labels=labels, guidance=w, seed=s, progress=False) for s in SEEDS]
        r = over_runs([judge(x, labels) for x in xs])
        rec = f", recognised as the requested digit {pm(r, 'recognised')}" if cond else ''
        mem = memorisation(torch.cat(xs), train.x, test.x)
        lines.append(f"- {'w = %g' % w if cond else 'Samples'}{' (the default guidance)' if cond and w == DEFAULT_GUIDANCE else ''}: "
                     f"FD {pm(r, 'fd')}, classifier score {pm(r, 'score', '.2f')}{rec}; memorisation: "
                     f"{mem['copied']:.1%} nearer a training digit than 95 % of test digits are, median distance ratio "
                     f"{mem['median_ratio']:.2f}")
    return '\n'.join(lines)

def card_markdown(c:dict) -> str:
    rows = '\n'.join(f"| {k} | {v} |" for k, v in c['config'].items())
    size, preset = c['model_config']['image_size'], c['config']['preset'] or DEFAULT_PRESETS['digits']
    seen = 'at their native 8×8' if size == 8 else f'resized to {size}×{size}'
    return (f"# {c['name']}\n\n{'An' if c['description'][0] in 'aeiou' else 'A'} {c['description']} trained with ddpm_nb on the 1,497 training digits of "
            f"the fixed split of scikit-learn's 8×8 digits ({seen}); the 300 test digits were never shown to it.\n\n- Command: `{c['command']}`\n- Steps: {c['steps']}\n"
            f"- Final training loss (mean of the last 50 steps): {c['final_loss']:.4f}\n- Machine: {c['machine']}\n- Date: {c['date']}\n"
            f"- Parameters: {c['parameters']:,} (the `{preset}` U-Net preset, predicting {c['model_config'].get('prediction', 'eps')})\n"
            f"- Weights: the EMA, stored in float16; its decay min({c['config']['ema_decay']}, (1 + n) / (10 + n)) was "
            f"{min(c['config']['ema_decay'], (1 + c['steps']) / (10 + c['steps'])):.4f} at the last step n = {c['steps']}\n\nLoad it with "
            f"`from ddpm_nb.checkpoint import load_pretrained; model, schedule, config = load_pretrained('{c['name']}')`.\n\n"
            f"## Measured\n\n{measure(c['name'])}\n\n"
            f"## Training configuration\n\n| setting | value |\n|---|---|\n{rows}\n")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=3000)
    p.add_argument('--runs', default='runs/pretrained', help='where the training runs go')
    p.add_argument('--only', choices=list(MODELS), help='train just this model')
    p.add_argument('--measure-only', action='store_true', help='only re-measure the shipped models and rewrite their cards')
    a = p.parse_args()
    PRETRAINED_DIR.mkdir(exist_ok=True)
    for name, flags in MODELS.items():
        if a.only and name != a.only: continue
        if a.measure_only:
            (PRETRAINED_DIR / f'{name}.md').write_text(card_markdown(load_checkpoint(PRETRAINED_DIR / f'{name}.pt')['card']))
            print(f"{name}: card re-measured"); continue
        run = Path(a.runs) / name
        cmd = ['ddpm_nb_train', '--out', str(run), '--steps', str(a.steps), '--seed', '0', *flags]
        if (run / 'ckpt.pt').exists(): cmd = ['ddpm_nb_train', '--resume', str(run), '--steps', str(a.steps)]   # continue it
        print('$', ' '.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        ck = load_checkpoint(run)
        losses = [r['loss'] for r in ck['history'] if r['step'] > ck['step'] - 50]
        card = {'name': name, 'description': 'class-conditional DDPM (with classifier-free guidance)' if not flags else 'unconditional DDPM',
                'command': ' '.join(['ddpm_nb_train', '--steps', str(a.steps), '--seed', '0', *flags]),
                'steps': ck['step'], 'final_loss': sum(losses) / len(losses),
                'parameters': sum(v.numel() for v in ck['ema']['model'].values() if v.is_floating_point()),
                'machine': machine(), 'date': datetime.date.today().isoformat(), 'config': ck['config'], 'model_config': ck['model_config']}
        out = export_model(run, PRETRAINED_DIR / f'{name}.pt', card)
        (PRETRAINED_DIR / f'{name}.md').write_text(card_markdown(card))
        print(f"{out}: {out.stat().st_size / 1e6:.2f} MB; " + json.dumps({k: card[k] for k in ('steps', 'final_loss')}))

if __name__ == '__main__': main()
