"""The report's figures (matplotlib, Agg, no pyplot state): learning curves with seed bands
(paper Fig. 4/6), per-structure box plots at one budget (Fig. 7), training-loss curves (Fig. 8)
and one seed's GGS suggestions in the manifold's latent space (Fig. 5).

Each figure is rendered to PNG bytes with the ``Software`` metadata removed and a fixed dpi, so
the same records give byte-identical PNGs under the same matplotlib, FreeType and libpng
versions (the versions are recorded in the report)."""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from albench.reporting.collect import Collection
from albench.stats import seed_averaged_case_metric

DPI = 100


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def versions() -> dict[str, str]:
    """The plotting library versions that byte-identical PNGs depend on."""
    import matplotlib
    from matplotlib import ft2font

    return {"matplotlib": matplotlib.__version__, "freetype": ft2font.__freetype_version__,
            "numpy": np.__version__}


def learning_curves(model: dict[str, Any]) -> bytes:
    """Mean Dice over seeds vs labelled fraction, band ± 1 sd over seeds; one panel per region
    (and the mean over regions); the full-data reference as a dashed line."""
    regions = [r for r in next(iter(model["curves"].values()))] if model["curves"] else []
    fig = Figure(figsize=(4.2 * len(regions), 3.6))
    axes = fig.subplots(1, len(regions), squeeze=False)[0]
    x = np.asarray(model["schedule"]) * 100
    names = {r["key"]: r["name"] for r in model["rows"]}
    ref = next((r for r in model["rows"] if r["reference"]), None)
    for ax, reg in zip(axes, regions):
        for key, curve in model["curves"].items():
            m = np.asarray([c[0] for c in curve[reg]])
            s = np.asarray([c[1] for c in curve[reg]])
            line, = ax.plot(x, m, marker="o", ms=3, lw=1.2, label=names[key])
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15, lw=0)
        if ref is not None:
            col = model["tables"]["dice"].get(f"{reg}@{model['budgets'][-1]:g}") if reg in model["regions"] else None
            if col and ref["key"] in col["cells"]:
                ax.axhline(col["cells"][ref["key"]]["mean_sd"][0], color="k", ls="--", lw=0.8, label=ref["name"])
        ax.set_title(f"Dice {reg}")
        ax.set_xlabel("labelled fraction of the pool (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean Dice (band: ± 1 sd over seeds)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def box_plots(coll: Collection, model: dict[str, Any], budget: float) -> bytes:
    """Per-structure (region) box plots of the seed-averaged per-case Dice at ``budget``."""
    regions = model["all_regions"]
    keys = [r["key"] for r in model["rows"] if not r["reference"]]
    by_key = {m.key: m for m in coll.methods}
    names = {r["key"]: r["name"] for r in model["rows"]}
    width = max(6.0, 0.35 * len(keys) * len(regions) + 2)
    fig = Figure(figsize=(min(width, 40.0), 4.0))
    ax = fig.subplots()
    pos, data, colors = [], [], []
    cmap = [f"C{i % 10}" for i in range(len(keys))]
    for ri, reg in enumerate(regions):
        for ki, key in enumerate(keys):
            vals = list(seed_averaged_case_metric(list(by_key[key].records.values()), budget, reg).values())
            if vals:
                pos.append(ri * (len(keys) + 1) + ki)
                data.append(vals)
                colors.append(cmap[ki])
    if data:
        bp = ax.boxplot(data, positions=pos, widths=0.7, patch_artist=True, showfliers=True,
                        flierprops={"markersize": 2})
        for patch, c in zip(bp["boxes"], colors):
            patch.set_facecolor(c)
            patch.set_alpha(0.6)
    ax.set_xticks([ri * (len(keys) + 1) + (len(keys) - 1) / 2 for ri in range(len(regions))])
    ax.set_xticklabels(regions, rotation=60 if len(regions) > 6 else 0, fontsize=7 if len(regions) > 6 else 9)
    ax.set_ylabel(f"Dice per test case (mean over seeds) at {budget:.1%}")
    handles = [ax.plot([], [], color=cmap[i], lw=6, alpha=0.6)[0] for i in range(len(keys))]
    ax.legend(handles, [names[k] for k in keys], fontsize=7, ncol=min(len(keys), 6), loc="lower left")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _png(fig)


def loss_curves(coll: Collection, model: dict[str, Any]) -> bytes:
    """Training loss per epoch, rounds concatenated (vertical lines: new rounds), mean over seeds."""
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.subplots()
    names = {r["key"]: r["name"] for r in model["rows"]}
    bounds: list[int] = []
    for m in coll.methods:
        if m.is_reference:
            continue
        curves = [np.concatenate([np.asarray(e.train.loss_curve, float) for e in r.rounds]) for r in m.records.values()]
        n = min(len(c) for c in curves)
        if n == 0:
            continue
        ax.plot(np.arange(1, n + 1), np.mean([c[:n] for c in curves], axis=0), lw=1, label=names[m.key])
        if not bounds:
            lens = [len(e.train.loss_curve) for e in m.first.rounds]
            bounds = list(np.cumsum(lens)[:-1])
    for b in bounds:
        ax.axvline(b + 0.5, color="0.7", lw=0.6)
    ax.set_xlabel("epoch (rounds concatenated)")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def latent_arrows(coll: Collection) -> tuple[bytes, str] | None:
    """One seed's GGS suggestions (``suggest_info["arrows"]``: z of the labelled slice -> z_j of
    the slice it led to) projected on the first two principal axes of those latents; None when
    no record carries arrows."""
    from sklearn.decomposition import PCA

    for m in coll.methods:
        for seed, rec in m.records.items():
            arrows = [(e.round, a) for e in rec.rounds for a in e.suggest_info.get("arrows", []) or []
                      if a.get("z") is not None and a.get("z_j") is not None]
            if not arrows:
                continue
            pts = np.asarray([a["z"] for _, a in arrows] + [a["z_j"] for _, a in arrows], float)
            xy = PCA(n_components=2, svd_solver="full").fit_transform(pts) if pts.shape[1] > 2 else pts[:, :2]
            k = len(arrows)
            fig = Figure(figsize=(5.0, 4.4))
            ax = fig.subplots()
            rounds = sorted({r for r, _ in arrows})
            for i, (r, _) in enumerate(arrows):
                c = f"C{rounds.index(r) % 10}"
                ax.annotate("", xy=xy[k + i], xytext=xy[i], arrowprops={"arrowstyle": "->", "color": c, "lw": 0.8})
            ax.scatter(xy[:k, 0], xy[:k, 1], s=8, c="k", label="labelled slice (z)")
            ax.scatter(xy[k:, 0], xy[k:, 1], s=8, c="r", marker="x", label="suggested slice (z_j)")
            for r in rounds:
                ax.plot([], [], color=f"C{rounds.index(r) % 10}", label=f"round {r}")
            ax.set_xlabel("latent PC 1")
            ax.set_ylabel("latent PC 2")
            ax.legend(fontsize=7)
            fig.tight_layout()
            return _png(fig), f"{m.key} seed {seed}"
    return None


def render_all(coll: Collection, model: dict[str, Any], box_budget: float | None = None) -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG bytes) of every figure the records allow."""
    budget = box_budget if box_budget is not None else model["budgets"][-1]
    out = [("learning_curves.png", "Learning curves: mean Dice over seeds per labelled fraction, band ± 1 sd "
                                   "(paper Fig. 4/6)", learning_curves(model)),
           ("boxplots.png", f"Per-region Dice per test case (seed-averaged) at {budget:.1%} (paper Fig. 7)",
            box_plots(coll, model, budget)),
           ("training_loss.png", "Training loss per epoch, rounds concatenated, mean over seeds (paper Fig. 8)",
            loss_curves(coll, model))]
    lat = latent_arrows(coll)
    if lat is not None:
        out.append(("latent_ggs.png", f"GGS suggestions in the manifold's latent space, {lat[1]}: arrows from each "
                                      "labelled slice's z to the suggested slice's z_j, first two principal axes "
                                      "(paper Fig. 5)", lat[0]))
    return out
