"""Section "Module importance": which linear modules carry reasoning (`crbench importance`),
read from RUN_DIR/importance/*/importance.json when the run has any; left out otherwise.

Per measured variant: the top modules by relative importance (all behaviours, and each one),
the direct check (Spearman's rho between importance and the loss increase of quantizing a
module alone), a layer x module-kind heat map per behaviour, and what `--protect` would keep at
the paper's keep-last-MLP share (equal effective bits) and at 2%.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from crbench.importance import ALL
from crbench.importance_io import IMPORTANCE_FILE, ImportanceResult, ModuleRow, read_importance
from crbench.importance_output import grid
from crbench.protect import effective_bits, last_mlp, protect
from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import num, pval, scaled
from crbench.report.render import slug

TITLE = "Module importance"
INTRO = ("Which linear modules carry the target reasoning behaviours (`crbench importance`, the "
         "method of arXiv 2504.02010 v2): sentences of the stored traces labelled by behaviour "
         "(labeller named below), a difference-of-means direction per module and behaviour, "
         "and attribution patching |u · ∂L/∂a| averaged over the behaviour's positions. Each "
         "behaviour's importance sums to 1 over the modules; 'all' is their mean. Checked the "
         "direct way: each module of the swept layers quantized alone (round to nearest), "
         "loss increase on the same traces, Spearman's rank correlation.")
TOP = 10
KEEP_BITS = 3  # the effective-bits column is for W3, the study's protect setting


def found(run_dir: Path) -> list[ImportanceResult]:
    paths = sorted((run_dir / "importance").glob(f"*/{IMPORTANCE_FILE}"))
    return [read_importance(p) for p in paths]


def share(x: float) -> str:
    return f"{100 * x:.2f}"


def importance_column(key: str) -> Column[ModuleRow]:
    def value(r: ModuleRow) -> float:
        return r.importance.get(key, 0.0)

    return col(f"{key} %", key, value, share)


def top_table(result: ImportanceResult, index: int) -> Table:
    keys = [ALL, *result.behaviours]
    swept = any(r.loss_increase for r in result.modules)
    columns: list[Column[ModuleRow]] = [
        col("module", "module", lambda r: r.name),
        col("params", "params", lambda r: r.params, lambda v: num(v)),
    ]
    columns += [importance_column(k) for k in keys]
    if swept:
        columns.append(col("loss +", "loss_increase_all",
                           lambda r: (r.loss_increase or {}).get(ALL), lambda v: num(v, 3)))
    rows = sorted(result.modules, key=lambda r: -r.importance.get(ALL, 0.0))[:TOP]
    return make_table(f"importance_top_{index}_{slug(result.variant or 'model')}",
                      f"Most important modules: {result.variant} ({result.traces} traces, "
                      f"labels: {result.labeller})", columns, rows,
                      "Relative importance (%) of the top modules by 'all'; the full table is "
                      "importance.csv in the importance folder. loss +: next-token loss increase "
                      "when the module alone is quantized.")


def shift_table(result: ImportanceResult, index: int) -> Table | None:
    """The modules that lost the most importance against the parent (the study plots only
    decreases): shift = parent - this, largest first."""
    lost = [r for r in result.modules if r.shift and r.shift.get(ALL, 0.0) > 0]
    if not lost:
        return None
    keys = [ALL, *result.behaviours]
    columns: list[Column[ModuleRow]] = [col("module", "module", lambda r: r.name)]
    columns += [shift_column(k) for k in keys]
    rows = sorted(lost, key=lambda r: -(r.shift or {}).get(ALL, 0.0))[:TOP]
    return make_table(f"importance_shift_{index}_{slug(result.variant or 'model')}",
                      f"Importance lost against {result.parent}: {result.variant}", columns,
                      rows, "Importance shift in percentage points (parent - this, on the same "
                      "traces), the largest decreases by 'all'.")


def shift_column(key: str) -> Column[ModuleRow]:
    def value(r: ModuleRow) -> float:
        return (r.shift or {}).get(key, 0.0)

    return col(f"{key} pp", f"shift_{key}", value, share)


def validation_table(results: list[ImportanceResult]) -> Table:
    rows = [r for r in results if r.validation is not None]
    columns: list[Column[ImportanceResult]] = [
        col("variant", "variant", lambda r: r.variant or r.model),
        col("modules", "modules", lambda r: r.validation.modules if r.validation else None),
        col("bits", "bits", lambda r: r.validation.bits if r.validation else None),
        col("ρ (all)", "rho_all", lambda r: r.validation.spearman.get(ALL) if r.validation
            else None, lambda v: num(v, 2)),
        col("p", "p_all", lambda r: r.validation.p_value.get(ALL) if r.validation else None,
            pval),
        col("ρ per behaviour", None, lambda r: ", ".join(
            f"{k} {num(v, 2)}" for k, v in r.validation.spearman.items() if k != ALL)
            if r.validation else ""),
    ]
    return make_table("importance_validation", "Importance against the direct check",
                      columns, rows, "Spearman's rho between a module's importance and the "
                      "loss increase when it alone is quantized (over the swept layers' "
                      "modules); per behaviour: loss on that behaviour's positions.")


def protect_table(results: list[ImportanceResult]) -> Table:
    rows: list[tuple[str, str, int, float]] = []
    for r in results:
        last = last_mlp(r)
        last_share = sum(m.params for m in last) / r.total_params
        rows.append((r.variant or r.model, "keep-last-MLP", len(last), last_share))
        for budget in (Fraction(last_share).limit_denominator(10**9), Fraction(1, 50)):
            plan = protect(r, budget)
            rows.append((r.variant or r.model, f"by importance ≤ {float(budget):.2%}",
                         len(plan.dense), plan.share))
    columns: list[Column[tuple[str, str, int, float]]] = [
        col("variant", "variant", lambda t: t[0]),
        col("recipe", "recipe", lambda t: t[1]),
        col("modules dense", "modules", lambda t: t[2]),
        col("weights dense %", "share", lambda t: t[3], share, lambda v: (scaled(v),)),
        col(f"effective bits at W{KEEP_BITS}", "effective_bits",
            lambda t: effective_bits(KEEP_BITS, t[3]), lambda v: f"{v:.3f}"),
    ]
    return make_table("importance_protect", "What protecting by importance keeps", columns,
                      rows, "`crbench protect IMPORTANCE.json --budget B` keeps the modules "
                      "with the most importance per weight dense, within B of the decoder's "
                      "linear weights; keep-last-MLP is the paper's choice. Compare their "
                      "accuracy at equal effective bits in the main results.")


def draw_heatmaps(figs: Figures, result: ImportanceResult, index: int) -> Plot:
    keys = [*result.behaviours, ALL]
    with figs.style():
        fig, axes = figs.new(len(keys), width=1.9, height=0.5 + 0.11 * (1 + max(
            m.layer for m in result.modules)), sharey=True)
        for ax, key in zip(axes, keys, strict=False):
            kinds, values = grid(result, key)
            ax.imshow(values, aspect="auto", cmap="viridis", vmin=0)
            ax.set_xticks(range(len(kinds)), [k.removesuffix("_proj") for k in kinds],
                          rotation=90, fontsize=7)
            ax.set_title(mpl_text(key, 24), fontsize=8)
            ax.grid(False)
        axes[0].set_ylabel("layer")
    name = result.variant or "model"
    return figs.save(fig, f"importance_heatmap_{index}_{slug(name)}",
                     f"Module importance by layer and kind: {name}",
                     "Relative importance per behaviour (brighter: more); each panel sums to 1.")


def heatmaps_of(result: ImportanceResult, index: int) -> Callable[[Figures], Plot | None]:
    def draw(figs: Figures) -> Plot | None:
        return draw_heatmaps(figs, result, index)

    return draw


def build(ctx: ReportContext) -> Section | None:
    results = found(ctx.results.path.parent)
    if not results:
        return None
    items: list[Table | Plot | None] = [validation_table(results), protect_table(results)]
    for i, result in enumerate(results, 1):
        items.append(top_table(result, i))
        items.append(shift_table(result, i))
        items.append(ctx.figure(heatmaps_of(result, i)))
    return Section(TITLE, INTRO, shown(*items))
