"""One self-contained HTML page per sweep (launch/report.py): every image is embedded.

Per job: its config, loss curves, FID/KID against step, the newest sample and interpolation
grids, and its preemption and checkpoint history. Read from the run directories only.
"""

from __future__ import annotations

import base64
import json
import time
from html import escape
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from hpcgen.engine.metric_groups import LOSSES, keys_of
from hpcgen.engine.run_dir import (
    checkpoint_dir,
    commit_manifest,
    committed_checkpoints,
    eval_dir,
    eval_figures,
    latest_name,
    sample_grids,
)
from hpcgen.engine.run_record import read_metrics, read_run
from hpcgen.eval.evaluate import run_results
from hpcgen.status import log_tail, run_dirs, sweep_status
from hpcgen.svgplot import line_chart

# the charts of metrics.jsonl, by metric_groups' group: (group, title, GAN only)
CHARTS = (
    (LOSSES, "losses", False),
    ("d_outputs", "D(real), D(fake), ADA p", True),
    ("throughput", "throughput (images/s)", False),
    ("memory", "peak memory (GB)", False),
)

STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
img { image-rendering: pixelated; max-width: 640px; border: 1px solid #ccc; }
section { border-top: 2px solid #444; margin-top: 28px; }
.failed { color: #b00; } .differs { background: #fff4cc; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; overflow-x: auto; }
#broken-images { display: none; background: #b00; color: white; padding: 8px; }
"""

# Counts images the browser could not decode: visible as a banner, readable by a test.
CHECK_IMAGES = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((img) => !img.complete || img.naturalWidth === 0);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesBroken = broken.length;
  if (broken.length) {
    const banner = document.getElementById("broken-images");
    banner.textContent = broken.length + " of " + images.length + " images failed to load: "
      + broken.map((img) => img.alt).join(", ");
    banner.style.display = "block";
  }
});
"""


def _e(value: Any) -> str:
    return escape("-" if value is None else str(value))


def _png(path: Path, caption: str, width: int | None = None) -> str:
    """An embedded PNG; `width` scales small grids up, otherwise it is fitted into 480 px.

    A file that does not decode (e.g. cut by a kill mid-write) is named instead of embedded."""
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, SyntaxError) as err:
        return f'<p class="failed">cannot show {escape(caption)}: {escape(str(path))}: {err}</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    style = f' style="width:{width}px"' if width else ' style="max-height:480px"'
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}"{style}>'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if isinstance(c, (int, float)) else f"<td>{_e(c)}</td>"
            for c in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: json.dumps(tree) if isinstance(tree, (list, dict)) else tree}


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        return _flatten(yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        return {}


def config_section(dirs: list[Path]) -> str:
    """Keys whose value differs between jobs (the sweep's axes), then each full config."""
    configs = {d.name: _config(d) for d in dirs}
    keys = sorted({k for c in configs.values() for k in c})
    differing = [k for k in keys if len({json.dumps(c.get(k)) for c in configs.values()}) > 1]
    parts = ["<h2>Configuration</h2>"]
    if len(dirs) > 1:
        rows = [[k, *(configs[d.name].get(k) for d in dirs)] for k in differing]
        parts.append("<p>Fields that differ between jobs:</p>")
        parts.append(_table(["field", *(f"job {d.name}" for d in dirs)], rows))
    for d in dirs:
        rows = [[k, v] for k, v in configs[d.name].items()]
        classes = ["differs" if k in differing else "" for k in configs[d.name]]
        parts.append(
            f"<details><summary>job {escape(d.name)}: full resolved config "
            f"({len(rows)} fields)</summary>{_table(['field', 'value'], rows, classes)}</details>"
        )
    return "".join(parts)


def _charts(run_dir: Path, model: str | None, results: list[dict]) -> list[str]:
    metrics = read_metrics(run_dir)
    present = {k for m in metrics for k in m}
    charts = []
    for group, title, gan_only in CHARTS:
        keys = keys_of(group, present)
        if (gan_only and model != "gan") or (group != LOSSES and not keys):
            continue
        series = {k: [(m["step"], m[k]) for m in metrics if k in m] for k in keys}
        charts.append(line_chart(series, title))
    if results:
        fid = {"FID": [(r["step"], r["fid"]) for r in results]}
        kid = {"KID x 1e3": [(r["step"], 1e3 * r["kid_mean"]) for r in results]}
        what = f"{results[-1]['extractor'].split('-')[0]}, {results[-1]['num_samples']} samples"
        charts += [
            line_chart(fid, f"FID vs step ({what})"),
            line_chart(kid, f"KID vs step ({what})"),
        ]
        prc = {
            name: [(r["step"], r[name]) for r in results if r.get(name) is not None]
            for name in ("precision", "recall")
        }
        if any(prc.values()):
            k = results[-1].get("prc_k", 3)
            charts.append(line_chart(prc, f"precision and recall vs step (k={k}, {what})"))
    return charts


def _images(run_dir: Path) -> list[str]:
    figures = []
    samples = sample_grids(run_dir)
    if samples:
        figures.append(_png(samples[-1], f"training samples (EMA), {samples[-1].stem}", 320))
    for suffix, what in (("samples", "evaluation samples"), ("interp", "interpolation")):
        found = eval_figures(run_dir, suffix)
        if found:
            figures.append(_png(found[-1], f"{what}, {found[-1].stem.rsplit('_', 1)[0]}", 480))
    for name, what in (("augment.png", "ADA augmentations"), ("noising.png", "noising x0 -> xT")):
        for folder in (run_dir, eval_dir(run_dir)):
            if (folder / name).is_file():
                figures.append(_png(folder / name, what))
    prediction = eval_figures(run_dir, "noise_prediction")
    if prediction:
        figures.append(_png(prediction[-1], f"predicted vs true noise, {prediction[-1].stem[:13]}"))
    return figures


def _history(run_dir: Path, run: dict[str, Any], results: list[dict]) -> str:
    events = run.get("events") or []
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"])),
            e["event"],
            e.get("step"),
            e.get("checkpoint"),
            e.get("slurm_job_id"),
            f"{e['save_s']:.2f}" if "save_s" in e else e.get("error"),
        ]
        for e in events
    ]
    parts = [f"<h3>History ({run.get('preemptions', 0)} preemption(s) survived)</h3>"]
    if rows:
        parts.append(
            _table(["time", "event", "step", "checkpoint", "SLURM job", "save s / error"], rows)
        )
    ckpt_dir = checkpoint_dir(run_dir)
    latest = latest_name(ckpt_dir)
    evaluated = {r["step"]: r for r in results}
    crows = []
    for manifest in map(commit_manifest, committed_checkpoints(ckpt_dir)):
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        created = meta.get("created") or manifest.stat().st_mtime
        size_mb = sum(f["bytes"] for f in meta["files"].values()) / 1e6
        crows.append(
            [
                manifest.parent.name + (" (latest)" if manifest.parent.name == latest else ""),
                meta["step"],
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)),
                round(size_mb, 2),
                meta.get("world_size"),
                *_scores(evaluated.get(meta["step"])),
            ]
        )
    header = ["committed checkpoint", "step", "created", "MB", "world size", *SCORES]
    parts.append(_table(header, crows) if crows else "<p>No committed checkpoint.</p>")
    return "".join(parts)


SCORES = ("FID", "precision", "recall")


def _scores(result: dict | None) -> list[str | None]:
    if result is None:
        return [None] * len(SCORES)
    return [f"{result['fid']:.2f}"] + [
        None if result.get(k) is None else f"{result[k]:.3f}" for k in ("precision", "recall")
    ]


def protocol_table(results: list[dict]) -> str:
    """What each result must name to be compared with a paper (eval/protocol.py's fields)."""
    if not results:
        return ""
    rows = [[r["step"], r.get("protocol") or "-", r.get("kimg")] for r in results]
    return "<h3>Evaluation protocol</h3>" + _table(["step", "protocol", "kimg"], rows)


def pending_note(pending: list[dict]) -> str:
    """The evaluations submitted during training that have no result yet (the curve's next
    points), with their SLURM jobs."""
    if not pending:
        return ""
    items = [
        f"step {p['step']}: "
        + (f"SLURM job {p['job_id']}, {p['state']}" if p["job_id"] else "queued for the run's end")
        + (f" (attempt {p['attempts']})" if p["attempts"] > 1 else "")
        for p in pending
    ]
    return f"<p>{len(pending)} evaluation(s) pending: {_e('; '.join(items))}</p>"


def job_section(row: dict[str, Any]) -> str:
    run_dir = Path(row["run_dir"])
    run = read_run(run_dir) or {}
    results = run_results(run_dir)  # eval/step_*.json, for the FID charts and the checkpoints
    title = f"Job {row['job']}: {' '.join(row['overrides']) or 'defaults'} ({row['model'] or '?'})"
    parts = [f'<section id="job-{escape(row["job"])}"><h2>{escape(title)}</h2>']
    parts.append(f"<p>{escape(str(run_dir))} · state {escape(row['state'])}</p>")
    if row["status"] == "failed":
        parts.append(f'<p class="failed">failed: {_e(row["error"])}</p>')
        tail = log_tail(row)
        if tail:
            parts.append(f"<pre>{escape(chr(10).join(tail))}</pre>")
    parts.append('<div class="row">' + "".join(_charts(run_dir, row["model"], results)) + "</div>")
    parts.append(pending_note(row["evaluation"]["pending"]))
    images = _images(run_dir)
    parts.append(
        '<div class="row">' + "".join(images) + "</div>" if images else "<p>No images yet.</p>"
    )
    parts.append(protocol_table(results))
    parts.append(_history(run_dir, run, results) + "</section>")
    return "".join(parts)


def summary_table(status: dict[str, Any]) -> str:
    rows = []
    for r in status["jobs"]:
        best = r["best_fid"]
        rows.append(
            [
                r["job"],
                " ".join(r["overrides"]) or "-",
                r["state"],
                f"{r['step']}/{r['max_steps'] or '?'}",
                r["kimg"],
                round(r["images_per_s"], 1) if r["images_per_s"] else None,
                f"{best['fid']:.2f} @ {best['step']}" if best else None,
                r["preemptions"],
                r["latest_checkpoint"],
            ]
        )
    header = [
        "job",
        "overrides",
        "state",
        "step",
        "kimg",
        "img/s",
        "best FID",
        "preempted",
        "latest",
    ]
    return _table(header, rows)


def build_report(path: Path) -> str:
    """The whole page as one string."""
    status = sweep_status(path)
    dirs = [Path(r["run_dir"]) for r in status["jobs"]]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>hpcgen report: {escape(path.name)}</title><style>{STYLE}</style>",
        f"<script>{CHECK_IMAGES}</script></head><body>",
        '<div id="broken-images"></div>',
        f"<h1>hpcgen report: {escape(str(path))}</h1>",
        f"<p>{len(dirs)} job(s) · written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        summary_table(status),
        "".join(f"<p>Next: {escape(line)}</p>" for line in status["next"]),
        config_section(dirs),
        *(job_section(row) for row in status["jobs"]),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write the page atomically (default <sweep>/report.html) and return its path."""
    if not run_dirs(path):
        raise FileNotFoundError(
            f"{path} holds no run: give a run directory (with run.json) or a sweep directory "
            "(with numbered job directories)"
        )
    out = out or path / "report.html"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(build_report(path))
    tmp.replace(out)
    return out
