"""Markdown rows of the method table from shrink reports (the JSON beside each checkpoint):
``python docs/scripts/shrink_table.py cache/m/tab/*.json``."""
import json
import sys

NAMES = {"lowrank": "low rank (activation-aware)", "activation": "activation-aware pruning",
         "magnitude": "magnitude pruning", "coreset": "coreset (Mussay et al.)", "data-coreset": "data-aware coreset"}
rows = []
for path in sys.argv[1:]:
    r = json.load(open(path))
    ft = r.get("finetune") or {}
    hist = {round(h["minutes"] * 8) / 8: h["psnr"] for h in ft.get("history", [])}
    mid = min(hist, key=lambda m: abs(m - 1.5)) if hist else None
    cost = r["macs_after"]["fine"] / r["macs_before"]["fine"] if r.get("macs_before") else float("nan")
    rows.append((r["spec"]["width"], r["method"], cost, r["params_after"]["total"], r["psnr_before_finetune"],
                 hist.get(mid) if mid is not None else float("nan"), r["psnr_after_finetune"], ft.get("steps_made", 0)))
print("| width (cost of) | method | cost | parameters | before distillation | after 1.5 min | after 3 min | steps |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
for w, m, c, p, b, h, a, s in sorted(rows, key=lambda r: (r[0], -r[6])):
    print(f"| {w} | {NAMES.get(m, m)} | {c:.3f} | {p:,} | {b:.2f} | {h:.2f} | **{a:.2f}** | {s:,} |")
