#!/usr/bin/env python
"""The course in a real browser: JupyterLab's sliders, and the docs pages.

1. Widgets: copies `nbs/` (and `settings.ini`) to a temporary folder, starts JupyterLab there on 127.0.0.1 with a
   random port and token (kernels get IN_TEST=1, so heavy cells use their small configurations), opens every notebook
   that uses ipywidgets in Chromium, runs all cells, then moves each slider (the End key on its handle: to its maximum) and each
   dropdown (its next option) and checks that the interact's image changes, that no error output appears anywhere
   and that the kernel stays alive. Screenshots of each interactive cell before and after each move are left in
   `--screenshots` (default tests/screenshots/) for a person to look at.
2. Docs: processes the notebooks as nbdev does for Quarto (`nbdev.serve.proc_nbs`), renders the processed notebooks
   to HTML with nbconvert (Quarto itself cannot be installed here), opens every page and checks that its images load,
   that it shows one documentation header per `show_doc` call of its notebook, and that no raw directive text
   (`#| ...`, `:::` fences, `{{`) is left in the text.

Prints one verdict line per notebook and page (`PASS ...` / `FAIL ...`), then a summary; exits 1 if anything failed.
The browser is the system Chromium (`apt-get install chromium`), driven by Playwright's Python API.

    .venv/bin/python tests/browser_test.py                 # both parts
    .venv/bin/python tests/browser_test.py --part widgets --nbs /tmp/broken_nbs   # widgets only, other notebooks
"""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, secrets, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDGET_RE = re.compile(r'\binteract\b|ipywidgets')


def log(*a): print(*a, flush=True)


def widget_notebooks(nbs: Path) -> list[str]:
    "Names of the notebooks in `nbs` whose code uses ipywidgets' interact."
    out = []
    for p in sorted(nbs.glob('*.ipynb')):
        cells = json.loads(p.read_text())['cells']
        if any(c['cell_type'] == 'code' and WIDGET_RE.search(''.join(c['source'])) for c in cells): out.append(p.name)
    return out


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait_for(cond, timeout, what, interval=0.25):
    "Poll `cond()` until it returns something truthy; raise TimeoutError naming `what` after `timeout` seconds."
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v: return v
        if time.monotonic() > end: raise TimeoutError(f'{what} (waited {timeout:.0f} s)')
        time.sleep(interval)


class Lab:
    "A JupyterLab server on 127.0.0.1 with a random port and token, serving `root`; `stop()` kills its process group."
    def __init__(self, root: Path, tmp: Path, python: str):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f'http://127.0.0.1:{self.port}'
        settings = tmp / 'lab-settings'
        for ext, cfg in {'@jupyterlab/notebook-extension/tracker': {'windowingMode': 'none'},   # every cell in the DOM
                         '@jupyterlab/apputils-extension/notification': {'fetchNews': 'false', 'checkForUpdates': False},
                         '@jupyterlab/docmanager-extension/plugin': {'autosave': False}}.items():
            f = settings / f'{ext}.jupyterlab-settings'; f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(cfg))
        env = dict(os.environ, IN_TEST='1', JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(tmp / 'lab-workspaces'), JUPYTER_RUNTIME_DIR=str(tmp / 'runtime'),
                   OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'))
        self.log_path = tmp / 'jupyterlab.log'
        self.proc = subprocess.Popen(
            [python, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={self.port}',
             '--ServerApp.port_retries=0', f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={root}',
             '--LabApp.news_url=', '--LabApp.extension_manager=readonly', '--ServerApp.open_browser=False']
            + (['--allow-root'] if os.geteuid() == 0 else []),
            cwd=root, env=env, stdout=open(self.log_path, 'w'), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None or self.api('status') is not None, 90, 'JupyterLab did not start')
        if self.proc.poll() is not None: raise RuntimeError(f'JupyterLab exited: {self.log_tail()}')

    def api(self, path, method='GET'):
        try:
            req = urllib.request.Request(f'{self.base}/api/{path}', method=method,
                                         headers={'Authorization': f'token {self.token}'})
            with urllib.request.urlopen(req, timeout=10) as r: return json.load(r)
        except Exception: return None

    def kernel_state(self, nb_name):
        "The execution state of the kernel of notebook `nb_name` ('idle', 'busy', 'dead', ...), or None."
        for s in self.api('sessions') or []:
            if s.get('path', '').endswith(nb_name) and s.get('kernel'): return s['kernel'].get('execution_state')
        return None

    def shutdown(self, nb_name):
        "End the session (and kernel) of notebook `nb_name`."
        for s in self.api('sessions') or []:
            if s.get('path', '').endswith(nb_name): self.api(f'sessions/{s["id"]}', method='DELETE')

    def log_tail(self, n=20): return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-n:])

    def stop(self):
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try: os.killpg(self.proc.pid, sig)
                except ProcessLookupError: break
                try: self.proc.wait(wait); break
                except subprocess.TimeoutExpired: pass
        try: os.killpg(self.proc.pid, signal.SIGKILL)   # kernels started by the server, if any survived it
        except (ProcessLookupError, PermissionError): pass


# JavaScript run in the page: the errors shown anywhere, and the image(s) of one interact widget.
JS_ERRORS = """() => [...document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], .jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.innerText).filter(t => /Traceback|Error|Exception/.test(t))"""
JS_PROMPTS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')].map(e => e.innerText.trim())"""


def last_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1].strip() if lines else ''


def interact_cells(page):
    "The notebook cells whose output holds an ipywidgets interact."
    return page.locator('.jp-Notebook .jp-CodeCell').filter(has=page.locator('.widget-interact'))


def image_of(cell):
    "The `src` of every image in the interact's output, joined: changes whenever the plotted figure changes."
    return cell.evaluate("c => [...c.querySelectorAll('.widget-interact .jp-OutputArea-output img')].map(i => i.src).join('|')")


def run_widgets(page, lab, nb, shots: Path, timeout: float):
    "Open `nb`, run all, move every control; return a list of problems (empty when it passes) and a summary."
    problems, moved = [], []
    page.goto(f'{lab.base}/lab/tree/nbs/{nb}?reset&token={lab.token}', timeout=60_000)   # reset: no other tabs
    page.locator('.jp-Notebook .jp-CodeCell').first.wait_for(timeout=60_000)
    wait_for(lambda: lab.kernel_state(nb) == 'idle', 120, f'the kernel of {nb} did not start')
    page.locator('.jp-Notebook').first.click()            # focus the notebook panel, so the menu acts on it
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()

    def finished():
        if page.evaluate(JS_ERRORS): return 'error'
        prompts = page.evaluate(JS_PROMPTS)
        if prompts and all(re.fullmatch(r'\[\d+\]:', p) for p in prompts) and lab.kernel_state(nb) == 'idle': return 'done'
        if lab.kernel_state(nb) == 'dead': return 'dead'
    state = wait_for(finished, timeout, f'running all cells of {nb} did not finish', interval=0.5)
    if state != 'done': return [f'running all cells: {state}: ' + ' | '.join(map(last_line, page.evaluate(JS_ERRORS)))], moved

    cells = interact_cells(page)
    if cells.count() == 0: return ['no interact widget was displayed after running all cells'], moved
    stem = Path(nb).stem
    for k in range(cells.count()):
        cell = cells.nth(k)
        cell.scroll_into_view_if_needed()
        wait_for(lambda: image_of(cell), 60, f'interact {k} of {nb} shows no image')
        shot = shots / f'{stem}-{k}-0-before.png'; cell.screenshot(path=str(shot)); log(f'  screenshot {shot}')
        controls = cell.locator('.widget-interact > .widget-slider, .widget-interact > .widget-dropdown')
        for j in range(controls.count()):
            ctl = controls.nth(j)
            name = ctl.locator('.widget-label').first.inner_text().strip() or f'control {j}'
            before = image_of(cell)
            if ctl.locator('select').count():
                sel = ctl.locator('select'); opts = sel.locator('option').all_inner_texts()
                cur = sel.evaluate('s => s.selectedIndex'); new = (cur + 1) % len(opts)
                sel.select_option(index=new); what = f'{name} -> {opts[new]!r}'
            else:
                handle = ctl.locator('.noUi-handle').first
                old = ctl.locator('.widget-readout').first.inner_text().strip()
                handle.focus(); handle.press('End')                       # one jump to the maximum: one callback
                if ctl.locator('.widget-readout').first.inner_text().strip() == old: handle.press('Home')   # at max
                what = f'{name} {old} -> {ctl.locator(".widget-readout").first.inner_text().strip()}'
            moved_at, busy_at = time.monotonic(), [time.monotonic()]
            def settled():
                if page.evaluate(JS_ERRORS): return 'error'
                idle = lab.kernel_state(nb) == 'idle'
                if not idle: busy_at[0] = time.monotonic()
                if idle and image_of(cell) not in ('', before): return 'changed'
                if idle and time.monotonic() - busy_at[0] > 10 and time.monotonic() - moved_at > 15: return 'same'
            state = wait_for(settled, 180, f'moving {what}: no new image and the kernel still busy')
            if state == 'same': problems.append(f'moving {what}: the image did not change (kernel idle, same picture)')
            if (errs := page.evaluate(JS_ERRORS)):
                problems.append(f'moving {what}: error output: {last_line(errs[-1])}')
                log('  the error output:\n' + '\n'.join('    ' + l for l in errs[-1].splitlines()[-12:])); break
            if lab.kernel_state(nb) not in ('idle', 'busy'): problems.append(f'after {what}: kernel {lab.kernel_state(nb)}'); break
            shot = shots / f'{stem}-{k}-{j + 1}-after-{re.sub(r"[^A-Za-z0-9]+", "_", name)}.png'
            cell.screenshot(path=str(shot)); log(f'  screenshot {shot}'); moved.append(what)
    if (st := lab.kernel_state(nb)) != 'idle': problems.append(f'kernel state at the end: {st}')
    return problems, moved


def widgets_part(args, browser, tmp: Path) -> list[tuple[str, bool]]:
    nbs = Path(args.nbs).resolve()
    names = args.notebooks or widget_notebooks(nbs)
    root = tmp / 'lab'; shutil.copytree(nbs, root / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc'))
    shutil.copy(ROOT / 'settings.ini', root / 'settings.ini')      # nbdev finds its config above the notebooks
    shots = Path(args.screenshots).resolve(); shots.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic(); lab = Lab(root, tmp, sys.executable); results = []
    log(f'JupyterLab up on 127.0.0.1:{lab.port} in {time.monotonic() - t0:.0f} s; notebooks with widgets: {", ".join(names)}')
    try:
        for nb in names:
            t = time.monotonic()
            page = browser.new_page(viewport={'width': 1400, 'height': 1000}); page.set_default_timeout(30_000)
            try: problems, moved = run_widgets(page, lab, nb, shots, args.timeout)
            except Exception as e: problems, moved = [f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}'], []
            ok = not problems
            log(f'{"PASS" if ok else "FAIL"} widgets {nb} ({time.monotonic() - t:.0f} s): ' +
                (f'{len(moved)} controls moved ({"; ".join(moved)}), the image changed each time, no error output, '
                 'kernel idle' if ok else '; '.join(problems)))
            results.append((nb, ok))
            if not ok:
                page.screenshot(path=str(shots / f'{Path(nb).stem}-failure.png')); log(f'  screenshot {shots / f"{Path(nb).stem}-failure.png"}')
            page.close(); lab.shutdown(nb)
    finally: lab.stop()
    return results


OPTION = re.compile(r'^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')


def quarto_like(nb):
    "Apply the cell options Quarto reads from a processed notebook: leading `#| key: value` lines are removed, and"
    "`include: false` drops the cell, `echo: false` its code, `output: false` its outputs. Anything else is left."
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code':
            lines, opts = c.source.splitlines(), {}
            while lines and (m := OPTION.match(lines[0])): opts[m[1]] = m[2]; lines.pop(0)
            if opts.get('include') == 'false': continue
            c.source = '\n'.join(lines)
            if opts.get('echo') == 'false': c.metadata.setdefault('transient', {})['remove_source'] = True
            if opts.get('output') == 'false': c.outputs = []
        cells.append(c)
    nb.cells = cells
    return nb


def show_doc_names(nb: Path) -> list[str]:
    "What the notebook's code cells call show_doc on (e.g. 'NoiseSchedule.snr'), outside cells hidden from the docs."
    hidden = re.compile(r'^#\|\s*(hide|include:\s*false|output:\s*false)\s*$', re.M)
    return [n for c in json.loads(nb.read_text())['cells']
            if c['cell_type'] == 'code' and not hidden.search(s := ''.join(c['source']))
            for n in re.findall(r'^\s*show_doc\(\s*([\w.]+)', s, re.M)]


JS_PAGE = """() => ({imgs: [...document.images].map(i => [i.getAttribute('src').slice(0, 60), i.complete && i.naturalWidth > 0]),
    docs: [...document.querySelectorAll('.jp-OutputArea-output h2, .jp-OutputArea-output h3, .jp-OutputArea-output h4')]
           .map(h => h.innerText.trim()),
    text: document.body.innerText})"""
RAW = re.compile(r'^\s*#\|\s*\w|^:::|\{\{', re.M)


def docs_part(args, browser, tmp: Path) -> list[tuple[str, bool]]:
    from nbconvert import HTMLExporter
    import nbformat
    t0 = time.monotonic()
    nbs = Path(args.nbs).resolve()
    site = tmp / 'site'; shutil.copytree(nbs, site / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc'))
    shutil.copy(ROOT / 'settings.ini', site / 'settings.ini')
    r = subprocess.run([sys.executable, '-c', 'from nbdev.serve import proc_nbs; proc_nbs(n_workers=0)'], cwd=site,
                       capture_output=True, text=True, timeout=600)
    if r.returncode: log(f'FAIL docs: nbdev processing failed: {r.stderr[-2000:]}'); return [('docs processing', False)]
    proc = site / '_proc'; exporter = HTMLExporter(template_name='lab')
    pages = sorted(proc.glob('*.ipynb'))
    for p in pages:
        body, _ = exporter.from_notebook_node(quarto_like(nbformat.read(p, as_version=4)))
        p.with_suffix('.html').write_text(body)
    log(f'docs: {len(pages)} notebooks processed by nbdev and rendered by nbconvert in {time.monotonic() - t0:.0f} s')
    page = browser.new_page(); page.set_default_timeout(30_000); results = []
    page.route(re.compile(r'^https?://'), lambda route: route.abort())   # offline, as here: no CDN (MathJax) to wait for
    for p in pages:
        src_nb = nbs / p.name
        page.goto(p.with_suffix('.html').as_uri(), wait_until='load', timeout=60_000)
        info = page.evaluate(JS_PAGE)
        problems, want = [], show_doc_names(src_nb)
        bad = [s for s, ok in info['imgs'] if not ok]
        if bad: problems.append(f'{len(bad)} of {len(info["imgs"])} images did not load: {bad[:3]}')
        figs_src = sum(o.get('output_type') in ('display_data', 'execute_result') and 'image/png' in o.get('data', {})
                       for c in json.loads(src_nb.read_text())['cells'] for o in c.get('outputs', []))
        if len(info['imgs']) < figs_src: problems.append(f'{len(info["imgs"])} images shown, the notebook saved {figs_src}')
        heads = {h.replace('_', '') for h in info['docs']}          # `__call__` is rendered as a bold "call"
        missing = [n for n in want if n.replace('_', '') not in heads and n.split('.')[-1].replace('_', '') not in heads]
        if missing: problems.append(f'{len(missing)} of {len(want)} show_doc calls render no documentation: '
                                    + ', '.join(missing))
        raw = sorted({m.group(0).strip() for m in RAW.finditer(info['text'])})
        if raw: problems.append(f'raw directive text in the page: {raw[:5]}')
        ok = not problems
        log(f'{"PASS" if ok else "FAIL"} docs {p.name}: ' + (f'{len(info["imgs"])} images loaded, {len(heads)} '
            f'documentation headers for {len(want)} show_doc calls, no raw directives' if ok else '; '.join(problems)))
        results.append((p.name, ok))
    page.close()
    log(f'docs: {len(pages)} pages checked in {time.monotonic() - t0:.0f} s')
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--part', choices=('all', 'widgets', 'docs'), default='all')
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'), help='the notebooks to test (copied first; default nbs/)')
    ap.add_argument('--notebooks', nargs='*', help='only these notebook names (default: every one using ipywidgets)')
    ap.add_argument('--screenshots', default=str(ROOT / 'tests' / 'screenshots'), help='where to leave the screenshots')
    ap.add_argument('--chromium', default=os.environ.get('CHROMIUM', shutil.which('chromium') or '/usr/bin/chromium'))
    ap.add_argument('--timeout', type=float, default=300, help='seconds allowed for running all cells of a notebook')
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # `timeout` or kill: still stop JupyterLab and Chromium
    from playwright.sync_api import sync_playwright
    t0, results = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix='ddpm_nb_browser_') as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=['--no-sandbox'], timeout=60_000)
        try:
            if args.part in ('all', 'widgets'): results += widgets_part(args, browser, Path(tmp))
            if args.part in ('all', 'docs'): results += docs_part(args, browser, Path(tmp))
        finally: browser.close()
    failed = [n for n, ok in results if not ok]
    log(f'browser test: {len(results) - len(failed)} passed, {len(failed)} failed'
        + (f' ({", ".join(failed)})' if failed else '') + f', {time.monotonic() - t0:.0f} s')
    return 1 if failed or not results else 0


if __name__ == '__main__':
    sys.exit(main())
