"""What `crbench importance` writes into its folder (RUN_DIR/importance/<variant>/):

    importance.json        the typed record (`crbench.importance_io`)
    importance.csv         one row per module: layer, kind, params, importance per behaviour and
                           "all", parent importance and shift when measured, validation loss
                           increase when swept
    heatmap_<key>.png/svg  layer x module-kind heat map of one behaviour's importance (and of the
                           shift, when a parent was measured)
"""

from __future__ import annotations

import csv
from pathlib import Path

from crbench.importance import ALL
from crbench.importance_io import IMPORTANCE_FILE, ImportanceResult, write_importance

KIND_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def variant_folder(run_dir: Path, variant: str | None) -> Path:
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", variant or "model").strip("-.") or "model"
    return run_dir / "importance" / name


def keys_of(result: ImportanceResult) -> list[str]:
    return [*result.behaviours, ALL]


def write_csv(result: ImportanceResult, path: Path) -> None:
    keys = keys_of(result)
    header = ["module", "layer", "kind", "params", *keys]
    has_parent = any(r.parent_importance for r in result.modules)
    has_check = any(r.loss_increase for r in result.modules)
    if has_parent:
        header += [f"parent_{k}" for k in keys] + [f"shift_{k}" for k in keys]
    if has_check:
        header += [f"loss_increase_{k}" for k in keys]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in result.modules:
            row: list[object] = [r.name, r.layer, r.kind, r.params]
            row += [r.importance.get(k, "") for k in keys]
            if has_parent:
                row += [(r.parent_importance or {}).get(k, "") for k in keys]
                row += [(r.shift or {}).get(k, "") for k in keys]
            if has_check:
                row += [(r.loss_increase or {}).get(k, "") for k in keys]
            writer.writerow(row)


def grid(result: ImportanceResult, key: str, shift: bool = False
         ) -> tuple[list[str], list[list[float]]]:
    """(kinds, [layer][kind] values): a behaviour's importance (or shift) as a layer x kind grid."""
    kinds = [k for k in KIND_ORDER if any(r.kind == k for r in result.modules)]
    kinds += sorted({r.kind for r in result.modules} - set(kinds))
    layers = 1 + max(r.layer for r in result.modules)
    values = [[0.0] * len(kinds) for _ in range(layers)]
    for r in result.modules:
        source = r.shift if shift else r.importance
        values[r.layer][kinds.index(r.kind)] = (source or {}).get(key, 0.0)
    return kinds, values


def draw_heatmap(result: ImportanceResult, key: str, folder: Path, shift: bool = False
                 ) -> tuple[Path, Path]:
    from matplotlib.figure import Figure

    kinds, values = grid(result, key, shift)
    fig = Figure(figsize=(3.6, 0.6 + 0.16 * len(values)), layout="constrained")
    ax = fig.subplots()
    if shift:
        bound = max((abs(v) for row in values for v in row), default=0.0) or 1.0
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(kinds)), [k.removesuffix("_proj") for k in kinds])
    ax.set_ylabel("layer")
    what = "importance shift (parent - this)" if shift else "relative importance"
    ax.set_title(f"{key}: {what}", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    stem = f"heatmap_{'shift_' if shift else ''}{key}"
    png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
    fig.savefig(png, dpi=130)
    fig.savefig(svg, metadata={"Date": None})
    return png, svg


def write_outputs(result: ImportanceResult, folder: Path) -> list[Path]:
    """importance.json, importance.csv and the heat maps; the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    write_importance(result, folder / IMPORTANCE_FILE)
    write_csv(result, folder / "importance.csv")
    written = [folder / IMPORTANCE_FILE, folder / "importance.csv"]
    has_shift = any(r.shift for r in result.modules)
    for key in keys_of(result):
        written += draw_heatmap(result, key, folder)
        if has_shift:
            written += draw_heatmap(result, key, folder, shift=True)
    return written


def summary_lines(result: ImportanceResult, folder: Path, top: int = 10) -> list[str]:
    """What `crbench importance` prints: traces, top modules, validation, time, folder."""
    ranked = sorted(result.modules, key=lambda r: -r.importance.get(ALL, 0.0))[:top]
    lines = [f"{result.variant}: {result.traces} traces, {result.trace_tokens} trace tokens; "
             "positions " + ", ".join(f"{b} {n}" for b, n in result.positions.items()),
             "top modules (all behaviours): " + ", ".join(
                 f"{r.name.split('layers.')[-1]} {r.importance.get(ALL, 0.0):.3f}"
                 for r in ranked)]
    if result.validation is not None:
        v = result.validation
        rho = ", ".join(f"{k} {'n/a' if r is None else f'{r:.3f}'}" for k, r in v.spearman.items())
        lines.append(f"validation: {v.modules} modules quantized alone to {v.bits} bits; "
                     f"Spearman rho: {rho}")
    lines.append("seconds: " + ", ".join(f"{k} {s:.1f}" for k, s in result.seconds.items()))
    lines.append(f"written: {folder}")
    return lines
