"""Progress for the commands: the library's progress events turned into output.

On a terminal, a rich progress bar with notes printed above it; elsewhere (a log file, CI,
``nohup``) one plain line every ``PLAIN_EVERY`` seconds instead of the bar, so a long run is
never silent."""

from __future__ import annotations

import os
import sys
import time

import typer



def _every(default: float = 10.0) -> float:
    """Seconds between plain progress lines: ``NERFEXPORT_PROGRESS_EVERY``, else 10."""
    try:
        v = float(os.environ.get("NERFEXPORT_PROGRESS_EVERY", default))
    except ValueError:
        return default
    return v if v >= 0 else default


PLAIN_EVERY = _every()   # seconds between plain progress lines when the output is not a terminal


# the line each event prints above the bar, formatted with the event's own fields
LINES = {
    "warning": "warning: {text}",
    "stage": "  {stage}...",
    "eval": "step {step:6d}  {minutes:6.2f} min  held-out PSNR {psnr:.2f} dB ({pixels} pixels)",
    "final": "held-out PSNR {psnr:.2f} dB, SSIM {ssim:.3f} on {views} full views ({n_coarse}+{n_fine} samples, "
             "{seconds:.0f} s)",
    "resume": "resuming at step {step}",
    "complete": "the output already holds a finished run of {step} steps (--restart to train anew)",
    "grow": "step {step}: widened every layer to {width}",
    "reinit": "step {step}: the {network} network collapsed; re-initialised it",
    "layer": "    {network} {layer} alone int8: {drop:.3f} dB below fp32",
    "kept-float": "    keeping {network} {layer} in float: {psnr:.2f} dB",
    "done": "    median {median_ms:.0f} ms/frame",
    "skipped": "    not run: {reason}",
    "peak": "measuring the int8 and fp32 GEMM peak (onnxruntime CPU, all cores)",
    "teacher": "  teacher: PSNR {psnr:.2f} dB",
}


def describe(e: dict) -> str | None:
    """The line an event prints above the bar (``None``: it only moves the bar)."""
    kind = e.get("event")
    if kind in ("note", "stage") and "text" in e:
        return (f"[{e['index']}/{e['total']}] " if "index" in e else "") + e["text"]
    if kind == "scene":
        s = e["scene"]
        return (f"{s.kind} scene: {len(s.splits['train'])} train views of {s.W}x{s.H}, near {s.near:.3g} "
                f"far {s.far:.3g}{' (NDC)' if s.ndc else ''}")
    if kind == "chose":
        tried = ", ".join(f"{m} {v:.2f} dB" for m, v in e["scores"].items())
        return f"    method auto: {e['method']} (pruned students against the teacher on training pixels: {tried})"
    if kind == "item":
        return f"[{e['index'] + 1}] {e['label']}"
    if kind == "row" and "method" in e:
        pr = "" if e.get("psnr_pruned") is None else f"pruned {e['psnr_pruned']:.2f} dB, "
        return f"  {e['method']} w{e['width']}: {pr}final {e['psnr']:.2f} dB, {e['params']:,} parameters"
    if kind == "row":
        return f"  {e['model']} {e['precision']} {e.get('method') or ''}: {e['psnr']:.2f} dB, {e['bytes'] / 1e6:.3f} MB"
    return LINES[kind].format(**e) if kind in LINES else None


def _info(e: dict) -> str:
    parts = []
    if "loss" in e:
        parts.append(f"loss {e['loss']:.4f}")
    if "psnr" in e:
        parts.append(f"psnr {e['psnr']:5.2f} dB")
    if "occupied" in e:
        parts.append(f"occupied {100 * e['occupied']:.0f}%")
    return " ".join(parts)


class Reporter:
    """``with Reporter("train", total) as report: library_call(progress=report)``."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total = label, total
        self.tty = sys.stdout.isatty()
        self.bar = self.task = None
        self.t0 = self.last = time.monotonic()
        self.budget: float | None = None

    def __enter__(self) -> "Reporter":
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(),
                                TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), TimeRemainingColumn())
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False)
        else:
            typer.echo(text)

    def __call__(self, e: dict) -> None:
        if e.get("event") == "start":   # a new counted stage: its own total, elapsed time and ETA
            self.total = e.get("total", self.total)
            self.budget = e.get("minutes")  # a time budget: the ETA counts down its minutes
            self.t0 = self.last = time.monotonic()
            if self.bar is not None:
                self.bar.update(self.task, total=None if self.budget else self.total, completed=0)
            if e.get("text"):
                self._print(e["text"])
            return
        line = describe(e)
        if line is not None:
            self._print(line)
        if e.get("event") in ("step", "resume", "complete") and "step" in e:
            if self.bar is not None:
                self.bar.update(self.task, completed=e["step"], info=_info(e))
            elif e.get("event") == "step" and time.monotonic() - self.last >= PLAIN_EVERY:
                self.last = now = time.monotonic()
                done, total = e["step"], self.total
                if self.budget and "minutes" in e:
                    eta = f", {max(0.0, self.budget - e['minutes']):.1f} of {self.budget:g} min left"
                    total = None
                else:
                    eta = ("" if not total or not done else
                           f", ETA {(now - self.t0) * (total - done) / done / 60:.1f} min")
                typer.echo(f"{self.label}: step {done}{f'/{total}' if total else ''} {_info(e)} "
                           f"({(now - self.t0) / 60:.1f} min{eta})")
