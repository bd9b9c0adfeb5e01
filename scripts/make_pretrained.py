"""Train the digits models shipped in `ddpm_nb/pretrained/` with the `ddpm_nb_train` command, then export each
(EMA weights in float16) with a model card. About `--minutes` per model on a 2-core CPU.

    python scripts/make_pretrained.py --minutes 10

The shipped files were made on a 2-core CPU with the two models trained side by side, one core each:

    OMP_NUM_THREADS=1 python scripts/make_pretrained.py --minutes 12 --only digits-cond &
    OMP_NUM_THREADS=1 python scripts/make_pretrained.py --minutes 12 --only digits-uncond
"""
import argparse, datetime, json, os, platform, subprocess, sys
from pathlib import Path
import torch
from ddpm_nb.checkpoint import PRETRAINED_DIR, export_model, load_checkpoint

MODELS = {'digits-cond': [], 'digits-uncond': ['--no-cond']}

def machine() -> str:
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor()) \
        if Path('/proc/cpuinfo').exists() else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"

def card_markdown(c:dict) -> str:
    rows = '\n'.join(f"| {k} | {v} |" for k, v in c['config'].items())
    return (f"# {c['name']}\n\n{'An' if c['description'][0] in 'aeiou' else 'A'} {c['description']} trained with ddpm_nb on the 1,797 embedded 8×8 scikit-learn digits "
            f"(resized to 16×16).\n\n- Command: `{c['command']}`\n- Steps: {c['steps']} ({c['wall_time_min']:.1f} min of training)\n"
            f"- Final training loss (mean of the last 50 steps): {c['final_loss']:.4f}\n- Machine: {c['machine']}\n- Date: {c['date']}\n"
            f"- Parameters: {c['parameters']:,} (the `digits` U-Net preset)\n"
            f"- Weights: EMA (decay {c['config']['ema_decay']}), stored in float16\n\nLoad it with "
            f"`from ddpm_nb.checkpoint import load_pretrained; model, schedule, config = load_pretrained('{c['name']}')`.\n\n"
            f"## Training configuration\n\n| setting | value |\n|---|---|\n{rows}\n")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--minutes', type=float, default=10.0)
    p.add_argument('--runs', default='runs/pretrained', help='where the training runs go')
    p.add_argument('--only', choices=list(MODELS), help='train just this model')
    a = p.parse_args()
    PRETRAINED_DIR.mkdir(exist_ok=True)
    for name, flags in MODELS.items():
        if a.only and name != a.only: continue
        run = Path(a.runs) / name
        cmd = ['ddpm_nb_train', '--out', str(run), '--minutes', f'{a.minutes:g}', '--seed', '0', *flags]
        print('$', ' '.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        ck = load_checkpoint(run)
        losses = [r['loss'] for r in ck['history'] if r['step'] > ck['step'] - 50]
        card = {'name': name, 'description': 'class-conditional DDPM (with classifier-free guidance)' if not flags else 'unconditional DDPM',
                'command': ' '.join(['ddpm_nb_train', '--minutes', f'{a.minutes:g}', '--seed', '0', *flags]),
                'steps': ck['step'], 'wall_time_min': ck['elapsed'] / 60, 'final_loss': sum(losses) / len(losses),
                'parameters': sum(v.numel() for v in ck['ema']['model'].values() if v.is_floating_point()),
                'machine': machine(), 'date': datetime.date.today().isoformat(), 'config': ck['config'], 'model_config': ck['model_config']}
        out = export_model(run, PRETRAINED_DIR / f'{name}.pt', card)
        (PRETRAINED_DIR / f'{name}.md').write_text(card_markdown(card))
        print(f"{out}: {out.stat().st_size / 1e6:.2f} MB; " + json.dumps({k: card[k] for k in ('steps', 'wall_time_min', 'final_loss')}))

if __name__ == '__main__': main()
