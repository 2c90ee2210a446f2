"""Render a report model (:mod:`albench.reporting.model`) as Markdown, a self-contained HTML page
(images embedded as base64, no external resource) and a long-format CSV of every number shown.
Tables are formatted with tabulate. Output depends only on the model: same model, same bytes."""

from __future__ import annotations

import base64
import csv
import html
import io
from typing import Any, Iterable, Sequence

from tabulate import tabulate

Cell = tuple[str, bool]  # (text, bold)


def _f(v: float | None, metric: str) -> str:
    if v is None:
        return "–"
    return f"{v:.4f}" if metric == "dice" else f"{v:.2f}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _pct(f: float | None) -> str:
    return "not reached" if f is None else f"{100 * f:.3g}%"


def _col_title(model: dict[str, Any], col: str) -> str:
    region, frac = col.split("@")
    return f"{100 * float(frac):.3g}% {region}"


def metric_tables(model: dict[str, Any]) -> list[tuple[str, list[str], list[list[Cell]]]]:
    """(title, header, rows) of the Dice, HD95 and HD95-median tables, with the primary test's p
    between the two best methods and the seed-paired p as the last rows."""
    names = {r["key"]: r["name"] + ("" if r["complete"] else f" (incomplete: {len(r['seeds'])} seeds)")
             for r in model["rows"]}
    out = []
    for metric, title in (("dice", "Dice, mean ± sd over seeds"), ("hd95", "HD95 (mm), mean ± sd over seeds")):
        tab = model["tables"][metric]
        cols = list(tab)
        header = ["method"] + [_col_title(model, c) for c in cols]
        rows: list[list[Cell]] = []
        for r in model["rows"]:
            row: list[Cell] = [(names[r["key"]], False)]
            for c in cols:
                cell = tab[c]["cells"].get(r["key"])
                text = "–" if cell is None else f"{_f(cell['mean_sd'][0], metric)} ± {_f(cell['mean_sd'][1], metric)}"
                row.append((text, r["key"] in tab[c]["best"]))
            rows.append(row)
        top = [model["statistics"]["top_two"][f"{metric}:{c}"] for c in cols]
        rows.append([("Wilcoxon p, top two (cases)", False)] + [(_p(t["p"]), False) for t in top])
        rows.append([("Wilcoxon p, top two (seeds)", False)] + [(_p(t["seed_paired_p"]), False) for t in top])
        out.append((title, header, rows))
        if metric == "hd95":
            med_rows = []
            for r in model["rows"]:
                row = [(names[r["key"]], False)]
                for c in cols:
                    cell = tab[c]["cells"].get(r["key"])
                    row.append(("–" if cell is None else
                                f"{_f(cell['median'], metric)} ({cell['penalty_count']}/{cell['values']})", False))
                med_rows.append(row)
            out.append(("HD95 (mm), median over (seed, case) values (values scored with the empty-mask penalty / "
                        "all values)", header, med_rows))
    return out


def aubc_table(model: dict[str, Any]) -> tuple[list[str], list[list[Cell]]]:
    names = {r["key"]: r["name"] for r in model["rows"]}
    rows_by = {a["key"]: a for a in model["aubc"]["rows"]}
    header = ["rank", "method", "AUBC mean ± sd", "95% CI (seeds)", "95% CI (cases)", "below the one above",
              "resolved", "Wilcoxon p vs above (seeds)"]
    rows: list[list[Cell]] = []
    order = model["aubc"]["ranking"] + [a["key"] for a in model["aubc"]["rows"] if not a["ranked"]]
    for k in order:
        a = rows_by[k]
        ci = lambda c: "n/a" if c is None else f"[{c[0]:.4f}, {c[1]:.4f}]"
        resolved = a.get("resolved")
        rows.append([(str(a.get("rank", "not ranked")), False), (names[k], False),
                     (f"{a['mean_sd'][0]:.4f} ± {a['mean_sd'][1]:.4f}", a.get("rank") == 1),
                     (ci(a["ci_seeds"]), False), (ci(a["ci_cases"]), False),
                     (f"{a['below_previous']:.4f}" if "below_previous" in a else "", False),
                     ("" if "below_previous" not in a else "not calibrated" if resolved is None
                      else "yes" if resolved else "NOT RESOLVED", False),
                     (_p(a.get("seed_paired_p")) if "below_previous" in a else "", False)])
    return header, rows


def resolution_text(model: dict[str, Any]) -> str:
    cal = model["aubc"]["calibration"]
    if not cal:
        return "Resolution: not calibrated (run `albench calibrate` for this protocol and profile)."
    mde, n = model["aubc"]["mde"], model["aubc"].get("mde_seeds")
    if mde is None:
        return "Resolution: the calibration has no AUBC MDE."
    scaled = "" if n == cal["n_seeds"] else (
        f" (the A/A sd {cal['sd_paired_aubc']:.4f} at the {n} seeds reported; {cal['mde_aubc']:.4f} with the "
        f"calibration's {cal['n_seeds']})")
    from albench.engine.calibrate import primary_test_warning

    text = (f"Resolution (A/A calibration, {cal['n_seeds']} seeds): minimum detectable AUBC difference "
            f"{mde:.4f}{scaled}; smaller differences between neighbours in the ranking are marked NOT RESOLVED.")
    warning = primary_test_warning(cal)
    return text if warning is None else f"{text} WARNING: {warning}."


def vs_random_table(model: dict[str, Any]) -> tuple[list[str], list[list[Cell]]] | None:
    fams = model["statistics"]["vs_random"]
    if not fams:
        return None
    names = {r["key"]: r["name"] for r in model["rows"]}
    keys = list(dict.fromkeys(k for fam in fams.values() for k in fam))
    header = ["method"] + [f"{m.split(':')[0]} {_col_title(model, m.split(':', 1)[1])}" for m in fams]
    rows = []
    for k in keys:
        row: list[Cell] = [(names[k], False)]
        for fam_key, fam in fams.items():
            metric = fam_key.split(":")[0]
            v = fam.get(k)
            if v is None:
                row.append(("", False))
            else:
                better = -v["difference"] if metric == "hd95" else v["difference"]
                row.append((f"{_p(v['p_holm'])} {'+' if better > 0 else '−' if better < 0 else '='}", v["p_holm"] < 0.05))
        rows.append(row)
    return header, rows


def pairwise_tables(model: dict[str, Any]) -> list[tuple[str, list[str], list[list[Cell]]]]:
    names = {r["key"]: r["name"] for r in model["rows"]}
    out = []
    for fam, mat in model["statistics"]["pairwise"].items():
        metric, col = fam.split(":", 1)
        keys = list(mat)
        header = ["method"] + [names[k] for k in keys]
        rows = [[(names[a], False)] + [("·" if a == b else _p(mat[a][b]), False) for b in keys] for a in keys]
        out.append((f"{metric} {_col_title(model, col)}", header, rows))
    return out


def other_tables(model: dict[str, Any]) -> list[tuple[str, list[str], list[list[Cell]]]]:
    names = {r["key"]: r["name"] for r in model["rows"]}
    out = []
    ln = model["labels_needed"]
    if ln is not None:
        rows = [[(names[k], False), (_pct(v["fraction"]), False),
                 ("" if v["interpolated"] is None else f"{_pct(v['interpolated'])} (interpolated)", False)]
                for k, v in ln["methods"].items()]
        out.append((f"Labels needed: smallest budget reaching {ln['fraction_of_full']:g} × the full-data Dice "
                    f"({ln['full_dice']:.4f}, target {ln['target']:.4f})", ["method", "on the schedule", "between points"],
                    rows))
    if model["per_structure"]:
        for frac, per in model["per_structure"].items():
            regs = model["all_regions"]
            rows = [[(names[k], False)] + [(f"{v[r][0]:.3f} ± {v[r][1]:.3f}", False) for r in regs]
                    for k, v in per.items()]
            out.append((f"Dice per structure at {100 * float(frac):.3g}%, mean ± sd over seeds", ["method"] + regs, rows))
    return out


def _md(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    body = [[f"**{t}**" if b and t else t for t, b in row] for row in rows]
    return tabulate(body, headers=list(header), tablefmt="github", disable_numparse=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Cell]], cls: str = "") -> str:
    body = [[f"<strong>{html.escape(t)}</strong>" if b and t else html.escape(t) for t, b in row] for row in rows]
    out = tabulate(body, headers=[html.escape(h) for h in header], tablefmt="unsafehtml", disable_numparse=True)
    return out.replace("<table>", f'<table class="{cls}">' if cls else "<table>", 1)


def _prov_lines(model: dict[str, Any]) -> list[tuple[str, str]]:
    p = model["provenance"]
    sb = p["sandbox"]
    return [("protocol", f"{p['protocol']} version {p['protocol_version']}, profile {p['profile']}"),
            ("protocol fingerprint", p["protocol_fingerprint"]),
            ("full-data reference fingerprint", str(p["reference_protocol_fingerprint"])),
            ("dataset", f"{p['dataset']} (fingerprint {p['dataset_fingerprint']}, content {p['dataset_content_hash']})"),
            ("code", ", ".join(p["code_versions"]) + f"; report by albench {p['albench_version']}"),
            ("numerics version", str(p["numerics_version"])), ("torch", ", ".join(p["torch_versions"])),
            ("device", ", ".join(p["devices"])), ("seeds", ", ".join(map(str, p["seeds"]))),
            ("reference seeds", ", ".join(map(str, p["reference_seeds"])) or "none"),
            ("sandbox", f"mode {', '.join(sb['modes'])}; file-system sealed: "
                        f"{', '.join(str(v) for v in sb['fs_sealed'])}" + (f" ({'; '.join(sb['fs_seal'])})" if sb["fs_seal"] else "")),
            ("plotting", ", ".join(f"{k} {v}" for k, v in p.get("plotting", {}).items())),
            ("date", p["date"])]


def _notes(model: dict[str, Any]) -> list[str]:
    notes = []
    if model["partial"]:
        notes.append("PARTIAL REPORT: some records are missing or failed (see Problems); incomplete methods are "
                     "shown but not tested or ranked.")
    if model["labels_needed"] is None:
        notes.append("No full-data reference records: no reference row and no 'labels needed'.")
    pub = model["published"]
    if not pub["comparable"]:
        notes.append(pub["note"] + ".")
    return notes


def markdown(model: dict[str, Any]) -> str:
    """The report as Markdown (figures linked from ``figures/``)."""
    d = model["definitions"]
    parts = [f"# {model['title']}", ""]
    parts += [f"> {n}" for n in _notes(model)] + [""]
    for title, header, rows in metric_tables(model):
        parts += [f"## {title}", "", _md(header, rows), ""]
    parts += [f"Table: {d['table']}. HD95 median: {d['hd95_median']}. Primary test: {d['primary_test']}. "
              f"Seed-paired test: {d['seed_paired']}.", ""]
    parts += ["## Area under the budget curve (AUBC) ranking", "", resolution_text(model), "",
              _md(*aubc_table(model)), "", f"AUBC: {d['aubc']}. CI: {d['aubc_ci']}. {d['resolved']}.", ""]
    for title, header, rows in other_tables(model):
        parts += [f"## {title}", "", _md(header, rows), ""]
    vr = vs_random_table(model)
    if vr is not None:
        parts += ["## Each method against random (Holm-corrected p; + better, − worse than random)", "",
                  _md(*vr), "", d["vs_random"] + ".", ""]
    parts += ["## Pairwise primary tests (uncorrected p)", "", d["pairwise"] + ".", ""]
    for title, header, rows in pairwise_tables(model):
        parts += [f"### {title}", "", _md(header, rows), ""]
    for fig in model["figures"]:
        parts += [f"![{fig['caption']}](figures/{fig['file']})", "", f"*{fig['caption']}*", ""]
    pub = model["published"]
    if pub["comparable"]:
        parts += ["## The paper's published values", "", pub["source"] + ".", ""]
        for t in pub["tables"]:
            parts += [f"### {t['title']}", "", tabulate(t["rows"], headers=t["header"], tablefmt="github",
                                                        disable_numparse=True), ""]
    if model["problems"]:
        parts += ["## Problems", ""] + [f"- {p}" for p in model["problems"]] + [""]
    if model["skipped"]:
        parts += ["## Skipped records", ""] + [f"- `{s['path']}`: {s['reason']}" for s in model["skipped"]] + [""]
    parts += ["## Provenance", ""] + [f"- {k}: {v}" for k, v in _prov_lines(model)] + [""]
    return "\n".join(parts)


CSS = """body{font-family:sans-serif;margin:2em;max-width:110em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #bbb;padding:0.2em 0.5em;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#eee}.note{background:#fff4d6;padding:0.5em;border-left:4px solid #e0a800}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}
dl.prov dt{font-weight:bold;float:left;clear:left;width:16em}dl.prov dd{margin-left:17em}"""


def html_page(model: dict[str, Any], images: dict[str, bytes]) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 data URIs, no script."""
    d = model["definitions"]
    e = html.escape
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<link rel="icon" href="data:,">', f"<title>{e(model['title'])}</title>", f"<style>{CSS}</style></head><body>",
           f"<h1>{e(model['title'])}</h1>"]
    out += [f'<p class="note">{e(n)}</p>' for n in _notes(model)]
    for title, header, rows in metric_tables(model):
        out += [f"<h2>{e(title)}</h2>", _html_table(header, rows, "metric")]
    out.append(f"<p>{e('Table: ' + d['table'] + '. HD95 median: ' + d['hd95_median'] + '. Primary test: ' + d['primary_test'] + '. Seed-paired test: ' + d['seed_paired'] + '.')}</p>")
    out += ["<h2>Area under the budget curve (AUBC) ranking</h2>", f"<p>{e(resolution_text(model))}</p>",
            _html_table(*aubc_table(model), "aubc"), f"<p>{e('AUBC: ' + d['aubc'] + '. CI: ' + d['aubc_ci'] + '. ' + d['resolved'] + '.')}</p>"]
    for title, header, rows in other_tables(model):
        out += [f"<h2>{e(title)}</h2>", _html_table(header, rows)]
    vr = vs_random_table(model)
    if vr is not None:
        out += ["<h2>Each method against random (Holm-corrected p; + better, − worse than random)</h2>",
                _html_table(*vr, "vsrandom"), f"<p>{e(d['vs_random'])}.</p>"]
    out += ["<h2>Pairwise primary tests (uncorrected p)</h2>", f"<p>{e(d['pairwise'])}.</p>"]
    for title, header, rows in pairwise_tables(model):
        out += [f"<details><summary>{e(title)}</summary>", _html_table(header, rows, "pairwise"), "</details>"]
    out.append("<h2>Figures</h2>")
    for fig in model["figures"]:
        data = base64.b64encode(images[fig["file"]]).decode("ascii")
        out.append(f'<figure><img alt="{e(fig["caption"])}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{e(fig['caption'])}</figcaption></figure>")
    pub = model["published"]
    if pub["comparable"]:
        out += ["<h2>The paper's published values</h2>", f"<p>{e(pub['source'])}.</p>"]
        for t in pub["tables"]:
            out += [f"<h3>{e(t['title'])}</h3>", _html_table(t["header"], [[(c, False) for c in r] for r in t["rows"]])]
    if model["problems"]:
        out += ["<h2>Problems</h2><ul>"] + [f"<li>{e(p)}</li>" for p in model["problems"]] + ["</ul>"]
    if model["skipped"]:
        out += ["<h2>Skipped records</h2><ul>"] + [f"<li><code>{e(s['path'])}</code>: {e(s['reason'])}</li>"
                                                   for s in model["skipped"]] + ["</ul>"]
    out += ['<h2>Provenance</h2><dl class="prov">'] + [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _prov_lines(model)]
    out += ["</dl></body></html>", ""]
    return "\n".join(out)


def _csv_rows(model: dict[str, Any]) -> Iterable[list[Any]]:
    for metric, tab in model["tables"].items():
        for col in tab.values():
            for key, cell in col["cells"].items():
                base = ["table", metric, col["region"], col["fraction"], key, ""]
                yield base + ["mean", cell["mean_sd"][0]]
                yield base + ["sd", cell["mean_sd"][1]]
                yield base + ["n_seeds", cell["n_seeds"]]
                if "median" in cell:
                    yield base + ["median", cell["median"]]
                    yield base + ["penalty_count", cell["penalty_count"]]
                    yield base + ["values", cell["values"]]
                yield base + ["best", int(key in col["best"])]
    for fam, top in model["statistics"]["top_two"].items():
        metric, col = fam.split(":", 1)
        region, frac = col.split("@")
        for stat in ("p", "seed_paired_p"):
            yield ["top_two", metric, region, float(frac), "|".join(top["methods"]), "", stat, top[stat]]
    for fam, res in model["statistics"]["vs_random"].items():
        metric, col = fam.split(":", 1)
        region, frac = col.split("@")
        for key, v in res.items():
            for stat in ("p", "p_holm", "difference"):
                yield ["vs_random", metric, region, float(frac), key, "random", stat, v[stat]]
    for fam, mat in model["statistics"]["pairwise"].items():
        metric, col = fam.split(":", 1)
        region, frac = col.split("@")
        for a, row in mat.items():
            for b, p in row.items():
                if a != b:
                    yield ["pairwise", metric, region, float(frac), a, b, "p", p]
    for a in model["aubc"]["rows"]:
        base = ["aubc", "dice", "mean", "", a["key"], ""]
        yield base + ["mean", a["mean_sd"][0]]
        yield base + ["sd", a["mean_sd"][1]]
        for s, v in a["per_seed"].items():
            yield ["aubc", "dice", "mean", "", a["key"], f"seed {s}", "value", v]
        for unit in ("seeds", "cases"):
            ci = a[f"ci_{unit}"]
            yield base + [f"ci_{unit}_low", None if ci is None else ci[0]]
            yield base + [f"ci_{unit}_high", None if ci is None else ci[1]]
        for stat in ("rank", "below_previous", "resolved", "seed_paired_p"):
            if stat in a:
                yield base + [stat, a[stat]]
    if model["aubc"]["mde"] is not None:
        yield ["aubc", "dice", "mean", "", "", "", "mde", model["aubc"]["mde"]]
    ln = model["labels_needed"]
    if ln is not None:
        yield ["labels_needed", "dice", "mean", "", "", "", "full_dice", ln["full_dice"]]
        yield ["labels_needed", "dice", "mean", "", "", "", "target", ln["target"]]
        for k, v in ln["methods"].items():
            yield ["labels_needed", "dice", "mean", "", k, "", "fraction", v["fraction"]]
            yield ["labels_needed", "dice", "mean", "", k, "", "interpolated", v["interpolated"]]
    for frac, per in (model["per_structure"] or {}).items():
        for k, v in per.items():
            for reg, (m, s) in v.items():
                yield ["per_structure", "dice", reg, float(frac), k, "", "mean", m]
                yield ["per_structure", "dice", reg, float(frac), k, "", "sd", s]


def csv_text(model: dict[str, Any]) -> str:
    """Every number of the report, one per line: section, metric, region, fraction, method,
    other (second method or seed), statistic, value (empty: none)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "metric", "region", "fraction", "method", "other", "statistic", "value"])
    for row in _csv_rows(model):
        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buf.getvalue()
