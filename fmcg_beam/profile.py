"""A picture of the warehouse: ``profile.html``, one self-contained page of eight charts.

Every local run (``--sink duckdb`` and ``--sink parquet``) writes ``profile.html`` into its new warehouse
generation before it becomes current, beside ``ground_truth.json`` (``fmcg_beam.truth``), and links both from
the output directory like ``manifest.json``. ``python -m fmcg_beam profile --output_dir DIR`` rebuilds the page
of an existing warehouse: under the directory's lock, into a temporary file of the current generation that is
then renamed over the old page, so a reader sees the old page or the new one, never half of one.

The charts read the warehouse with DuckDB: the DuckDB file through a read-only connection, or, for a Parquet
warehouse, views over its files. Each chart is a query and a drawing (matplotlib, Agg backend, imported only
when a page is drawn) embedded as a base64 PNG: the page needs no network, no script and no style sheet of its
own beyond what it carries. A chart whose tables are missing or empty shows a note instead; a chart that fails
shows its error as a note and the run logs a warning, but never fails the run: the page is a view of the
warehouse, not part of it. The page holds no clock time, so the same warehouse gives the same page.

Usage::

    python -m fmcg_beam profile --output_dir ./output
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import duckdb
import numpy as np

from fmcg_beam import outdir, warehouse
from fmcg_beam.forked import Forked, next_request
from fmcg_beam.options import OptionsError

log = logging.getLogger(__name__)

PAGE = outdir.PROFILE
TRUTH = outdir.GROUND_TRUTH
DPI = 100
WIDTH, HEIGHT = 9.0, 4.2  # inches
# Shorter names of the regions whose full names do not fit an axis.
REGION_SHORT = {
    "National Capital Region": "NCR",
    "Cordillera Administrative Region": "CAR",
    "Bangsamoro Autonomous Region in Muslim Mindanao": "BARMM",
}


class ProfileError(OptionsError):
    """The directory holds no warehouse whose page could be drawn (bad input: exit 2)."""


# --- the warehouse as the charts see it ---------------------------------------------------------------


@dataclass
class Source:
    """A DuckDB connection to a warehouse, the tables it holds, its ground truth and its manifest."""

    con: duckdb.DuckDBPyConnection
    tables: frozenset[str]
    truth: Optional[dict]
    manifest: dict
    truth_path: Optional[Path] = None  # where ground_truth.json is, for the queries that read it

    def has(self, *tables: str) -> bool:
        return all(t in self.tables for t in tables)

    def columns(self, table: str) -> set[str]:
        return {r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}

    def rows(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        return self.con.execute(sql, params if isinstance(params, dict) else list(params)).fetchall()

    def period(self) -> tuple[Optional[dt.date], Optional[dt.date]]:
        """The warehouse's first and last day, from its manifest or its ground truth."""
        period = (self.manifest.get("warehouse") or {}).get("period") or {}
        start, end = period.get("start"), period.get("end")
        if not (start and end) and self.truth:
            start, end = self.truth.get("start_date"), self.truth.get("end_date")
        try:
            return dt.date.fromisoformat(str(start)), dt.date.fromisoformat(str(end))
        except ValueError:
            return None, None


def open_source(root: Path, manifest: Optional[dict] = None, parquet: bool = False,
                threads: Optional[int] = None) -> Source:
    """The warehouse in ``root`` (a generation or staging folder): its DuckDB file read-only, else (or with
    ``parquet``: while a run still builds that file) views over its Parquet files, which hold the same rows;
    ``manifest`` where the folder holds none yet (a run's, before it commits)."""
    db = root / outdir.DUCKDB_FILE
    if db.is_file() and not parquet:
        con = duckdb.connect(str(db), read_only=True)
        names = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
    else:
        con = duckdb.connect(":memory:")
        names = set()
        folder = root / outdir.PARQUET_DIR
        for table in sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            files = warehouse.parquet_files(root, table)
            if files and table.isidentifier():
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM {warehouse.read_parquet_sql(files)}")
                names.add(table)
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if manifest is None:
        manifest = _read_json(root / outdir.MANIFEST) or {}
    truth = read_truth(root / TRUTH)
    return Source(con, frozenset(names), truth, manifest, (root / TRUTH).resolve() if truth is not None else None)


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_truth(path: Path) -> Optional[dict]:
    """``ground_truth.json`` (``fmcg_beam.truth``) if the warehouse has one, else ``None``."""
    return _read_json(path)


# --- drawing helpers -------------------------------------------------------------------------------------


def _pesos(value: float, _pos=None) -> str:
    """₱ with K, M or B: the axis labels of amounts."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            text = f"{value / div:,.1f}".rstrip("0").rstrip(".")
            return f"₱{text}{suffix}"
    return f"₱{value:,.0f}"


def _figure(rows: int = 1, cols: int = 1, height: float = HEIGHT, **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, **kwargs)
    for ax in np.atleast_1d(axes).ravel():
        ax.grid(True, axis="y", color="#e5e5e5", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _peso_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(_pesos))


def _percent_axis(axis, decimals: int = 0) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def _month_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string: the page is the data's
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _stacked(ax, months: list[dt.date], labels: list[str], amounts: np.ndarray) -> None:
    """Monthly amounts stacked per label: areas over three months or more (a few polygons draw fast whatever the
    period), bars for one or two months (an area needs two points)."""
    colors = _colors(len(labels))
    if len(months) >= 3:
        ax.stackplot(months, amounts, labels=labels, colors=colors, linewidth=0)
        ax.set_xlim(months[0], months[-1])
        return
    bottom = np.zeros(len(months))
    for label, color, values in zip(labels, colors, amounts):
        ax.bar(months, values, width=20, bottom=bottom, color=color, label=label)
        bottom += values


def _monthly_pesos(months: list[dt.date], labels: list[str], amounts: np.ndarray, ylabel: str, xlabel: str,
                   legend: str, legend_size: int):
    """A figure of monthly peso amounts stacked per label, its legend to the right."""
    fig, ax = _figure()
    _stacked(ax, months, labels, amounts)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    _peso_axis(ax.yaxis)
    _month_axis(ax)
    ax.legend(title=legend, fontsize=legend_size, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    return fig


def _n(count: int, word: str, plural: str = "") -> str:
    """``1 campaign``, ``2 campaigns``."""
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def _months(days: Sequence[dt.date]) -> list[dt.date]:
    return sorted(set(days))


def _by_month(rows: Sequence[tuple]) -> tuple[list[dt.date], list[str], np.ndarray]:
    """``(months, groups, amounts[group, month])`` of ``(month, group, amount)`` rows, the largest group first."""
    months = _months([r[0] for r in rows])
    totals: dict[str, float] = {}
    for _, g, v in rows:
        totals[g] = totals.get(g, 0.0) + v
    groups = sorted(totals, key=lambda g: -totals[g])
    at, row = {m: i for i, m in enumerate(months)}, {g: i for i, g in enumerate(groups)}
    amounts = np.zeros((len(groups), len(months)))
    for m, g, v in rows:
        amounts[row[g], at[m]] = v
    return months, groups, amounts


def _days_in_month(d: dt.date) -> int:
    nxt = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return (nxt - d.replace(day=1)).days


# --- the charts -------------------------------------------------------------------------------------------
# Each returns (figure, caption) or a note (a string) that says why there is no chart.


def monthly_sales_by_channel(src: Source):
    if not src.has("fact_sales", "dim_retailers"):
        return "needs fact_sales and dim_retailers, which this warehouse does not hold"
    rows = src.rows("""
        SELECT date_trunc('month', s.date)::DATE, r.retailer_type, sum(s.total_amount)::DOUBLE
        FROM fact_sales s JOIN dim_retailers r USING (retailer_id) GROUP BY ALL ORDER BY 1, 2""")
    if not rows:
        return "fact_sales is empty"
    months, channels, amounts = _by_month(rows)
    fig = _monthly_pesos(months, channels, amounts, "Net sales (total_amount)", "Month", "Channel", 8)
    total = amounts.sum()
    top = channels[0]
    return fig, (f"Net sales per month, stacked by retailer type. {top} carries "
                 f"{amounts[0].sum() / total:.0%} of {_pesos(total)} over {len(months)} month(s).")


def census_shares(src: Source) -> dict[str, float]:
    """Population share per region: the ground truth's census shares, else the 2020 census in package data."""
    shares = (src.truth or {}).get("census_shares")
    if isinstance(shares, list) and shares:
        return {s["region"]: float(s["population_share"]) for s in shares}
    from fmcg_beam.domain import census_shares as census

    return dict(census())


def sales_share_by_region(src: Source):
    if not src.has("fact_sales", "dim_retailers", "dim_locations"):
        return "needs fact_sales, dim_retailers and dim_locations, which this warehouse does not hold"
    rows = src.rows("""
        SELECT l.region, sum(s.total_amount)::DOUBLE FROM fact_sales s
        JOIN dim_retailers r USING (retailer_id) JOIN dim_locations l ON l.location_id = r.location_id
        GROUP BY 1 ORDER BY 1""")
    total = sum(v for _, v in rows)
    if not rows or total <= 0:
        return "fact_sales is empty"
    sales = {region: v / total for region, v in rows}
    census = census_shares(src)
    regions = sorted(set(census) | set(sales), key=lambda r: census.get(r, 0.0))
    y = np.arange(len(regions))
    fig, ax = _figure(height=5.6)
    ax.grid(False)
    ax.grid(True, axis="x", color="#e5e5e5", linewidth=0.8)
    ax.barh(y + 0.2, [census.get(r, 0.0) for r in regions], height=0.4, color="#9e9e9e",
            label="Population share (2020 census)")
    ax.barh(y - 0.2, [sales.get(r, 0.0) for r in regions], height=0.4, color="#1f77b4", label="Sales share")
    ax.set_yticks(y, [REGION_SHORT.get(r, r) for r in regions], fontsize=8)
    _percent_axis(ax.xaxis)
    ax.set_xlabel("Share of the national total")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    gap = max(abs(sales.get(r, 0.0) - census.get(r, 0.0)) for r in regions)
    return fig, (f"Each region's share of net sales against its share of the 2020 census population; "
                 f"the largest gap is {gap * 100:.1f} percentage points.")


def _planted_price_index(truth: Optional[dict]) -> dict[str, dict[dt.date, float]]:
    """The ground truth's price index as {category: {month's first day: index}}, whatever its layout:
    ``{category: {"YYYY-MM": value}}``, ``{category: [{"month": ..., "index": ...}]}`` or a list of
    ``{"category": ..., "month": ..., "index": ...}``."""
    raw = (truth or {}).get("price_index")
    out: dict[str, dict[dt.date, float]] = {}

    def month(text) -> dt.date:
        return dt.date.fromisoformat(str(text)[:7] + "-01")

    def value(rec: dict) -> float:
        for key in ("index", "price_index", "value"):
            if key in rec:
                return float(rec[key])
        raise KeyError("index")

    if isinstance(raw, dict):
        for cat, series in raw.items():
            if isinstance(series, dict):
                out[cat] = {month(m): float(v) for m, v in series.items()}
            elif isinstance(series, list):
                out[cat] = {month(r["month"]): value(r) for r in series}
    elif isinstance(raw, list):
        for r in raw:
            out.setdefault(str(r["category"]), {})[month(r["month"])] = value(r)
    return {c: s for c, s in out.items() if s}


def price_index_by_category(src: Source):
    planted = _planted_price_index(src.truth)
    measured: dict[str, dict[dt.date, float]] = {}
    if src.has("fact_sales", "dim_products", "dim_categories"):
        # A line's price over its product's price at the period end (active products only) is the category's
        # index on the sale date over the index at the end; each series is then rebased to its first month. The
        # ratios are averaged as decimals, whose sum does not depend on the order DuckDB's threads add them in.
        for cat, month, ratio in src.rows("""
                SELECT c.category_name, date_trunc('month', s.date)::DATE, avg((s.unit_price / p.unit_price)::DECIMAL(18, 12))::DOUBLE
                FROM fact_sales s JOIN dim_products p USING (product_id) JOIN dim_categories c USING (category_id)
                WHERE p.status = 'Active' AND p.unit_price > 0 GROUP BY ALL ORDER BY 1, 2"""):
            measured.setdefault(cat, {})[month] = ratio
    if not planted and not measured:
        return "needs fact_sales with dim_products, or a ground_truth.json with a price index; this warehouse has neither"
    cats = sorted(set(planted) | set(measured))
    fig, ax = _figure()
    for cat, color in zip(cats, _colors(len(cats))):
        if cat in planted:
            series = planted[cat]
            xs = sorted(series)
            base = series[xs[0]]
            ax.plot(xs, [100 * series[x] / base for x in xs], color=color, linewidth=1.8, label=cat)
        if cat in measured:
            series = measured[cat]
            xs = sorted(series)
            base = series[xs[0]]
            ax.plot(xs, [100 * series[x] / base for x in xs], color=color, linestyle="none", marker="o",
                    markersize=3, label=None if cat in planted else cat)
    ax.set_ylabel("Price index (first month = 100)")
    ax.set_xlabel("Month")
    _month_axis(ax)
    ax.legend(title="Category", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    how = []
    if planted:
        how.append("lines: the planted index (ground_truth.json)")
    if measured:
        how.append("dots: measured from the sales lines (a line's price over its product's price at the period "
                   "end, averaged per category and month)")
    return fig, "Price level per category, rebased to the first month; " + "; ".join(how) + "."


def sku_pareto(src: Source):
    if not src.has("fact_sales"):
        return "needs fact_sales, which this warehouse does not hold"
    revenue = np.array([r[0] for r in src.rows(
        "SELECT sum(total_amount)::DOUBLE AS r FROM fact_sales GROUP BY product_id ORDER BY r DESC")], dtype=float)
    revenue = revenue[revenue > 0]
    if not len(revenue):
        return "fact_sales is empty"
    n = len(revenue)
    cum = np.concatenate([[0.0], np.cumsum(revenue) / revenue.sum()])
    share = np.arange(n + 1) / n
    fig, ax = _figure()
    ax.grid(True, axis="x", color="#e5e5e5", linewidth=0.8)
    ax.plot(share, cum, color="#1f77b4", linewidth=2, label="SKUs, highest revenue first")
    ax.plot([0, 1], [0, 1], color="#9e9e9e", linestyle="--", linewidth=1, label="Every SKU equal")
    marks = []
    for p in (0.1, 0.2):
        k = max(1, int(round(p * n)))
        top = float(cum[k])
        marks.append(f"the top {p:.0%} ({k:,}) earn {top:.0%}")
        ax.plot([k / n], [top], marker="o", color="#d62728")
        ax.annotate(f"top {p:.0%}: {top:.0%}", (k / n, top), textcoords="offset points", xytext=(8, -12),
                    fontsize=8)
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Share of SKUs sold")
    ax.set_ylabel("Cumulative share of net sales")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    return fig, f"Cumulative revenue of the {n:,} SKUs sold, largest first: {', '.join(marks)}."


def days_of_cover(src: Source):
    if not src.has("fact_inventory", "dim_products", "dim_categories"):
        return "needs fact_inventory, dim_products and dim_categories, which this warehouse does not hold"
    rows = src.rows("""
        SELECT c.category_name, i.date, sum(i.closing_stock)::DOUBLE, sum(i.stock_sold)::DOUBLE
        FROM fact_inventory i JOIN dim_products p USING (product_id) JOIN dim_categories c USING (category_id)
        GROUP BY ALL ORDER BY 1, 2""")
    if not rows:
        return "fact_inventory is empty"
    series: dict[str, dict[dt.date, float]] = {}
    totals: dict[dt.date, list[float]] = {}
    for cat, day, closing, sold in rows:
        if sold > 0:
            series.setdefault(cat, {})[day] = closing / (sold / _days_in_month(day))
        t = totals.setdefault(day, [0.0, 0.0])
        t[0] += closing
        t[1] += sold
    if not series:
        return "no stock was sold in the period, so days of cover are undefined"
    fig, ax = _figure()
    cats = sorted(series)
    for cat, color in zip(cats, _colors(len(cats))):
        xs = sorted(series[cat])
        ax.plot(xs, [series[cat][x] for x in xs], color=color, linewidth=1.2, marker="o" if len(xs) < 3 else None,
                markersize=4, label=cat)
    days = sorted(d for d, (c, s) in totals.items() if s > 0)
    overall = [totals[d][0] / (totals[d][1] / _days_in_month(d)) for d in days]
    ax.plot(days, overall, color="black", linewidth=2.2, marker="o" if len(days) < 3 else None, label="All products")
    ax.set_ylabel("Days of cover")
    ax.set_xlabel("Month end")
    ax.set_ylim(bottom=0)
    _month_axis(ax)
    ax.legend(title="Category", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    return fig, (f"Closing stock over the month's average daily units sold, per category and month end; "
                 f"median over all products and months {float(np.median(overall)):.0f} days.")


def costs_against_budgets(src: Source):
    have_ops = src.has("fact_operating_costs", "dim_departments")
    have_mkt = src.has("fact_marketing_costs", "dim_campaigns")
    if not (have_ops or have_mkt):
        return ("needs fact_operating_costs with dim_departments or fact_marketing_costs with dim_campaigns, "
                "which this warehouse does not hold")
    start, end = src.period()
    fig, (left, right) = _figure(1, 2, height=4.8)
    notes = []
    if have_ops:
        rows = src.rows("""
            SELECT d.department_name, d.budget::DOUBLE, coalesce(sum(o.amount), 0)::DOUBLE
            FROM dim_departments d LEFT JOIN fact_operating_costs o USING (department_id)
            GROUP BY ALL ORDER BY 2, 1""")
        years = ((end - start).days + 1) / 365.25 if start and end else 1.0
        y = np.arange(len(rows))
        left.grid(False)
        left.grid(True, axis="x", color="#e5e5e5", linewidth=0.8)
        left.barh(y, [r[2] for r in rows], height=0.6, color="#1f77b4", label="Operating costs")
        left.scatter([r[1] * years for r in rows], y, marker="|", s=250, color="#d62728", linewidths=2,
                     label="Budget for the period", zorder=3)
        left.set_yticks(y, [r[0] for r in rows], fontsize=7)
        _peso_axis(left.xaxis)
        left.set_xlabel("Amount")
        left.set_title("Operating costs by department", fontsize=10)
        left.legend(fontsize=7, loc="lower right", frameon=False)
        spent, budget = sum(r[2] for r in rows), sum(r[1] for r in rows) * years
        notes.append(f"operating costs are {spent / budget:.0%} of the departments' budgets for the period "
                     f"(annual budget x {years:.2f} years)" if budget else "the departments have no budget")
    else:
        left.set_axis_off()
        left.text(0.5, 0.5, "no operating costs in this warehouse", ha="center", va="center", fontsize=9)
    if have_mkt:
        rows = src.rows("""
            SELECT c.budget::DOUBLE, sum(m.amount)::DOUBLE, c.start_date, c.end_date
            FROM dim_campaigns c JOIN fact_marketing_costs m USING (campaign_id)
            GROUP BY c.campaign_id, c.budget, c.start_date, c.end_date ORDER BY c.campaign_id""")
        if rows:
            inside = [bool(start and end and start <= r[2] and r[3] <= end) for r in rows]
            for flag, color, label in ((True, "#1f77b4", "Campaign within the period"),
                                       (False, "#ff7f0e", "Campaign cut by the period's edges")):
                pts = [r for r, f in zip(rows, inside) if f == flag]
                if pts:
                    right.scatter([r[0] for r in pts], [r[1] for r in pts], s=14, alpha=0.8, color=color,
                                  label=label)
            top = max(max(r[0] for r in rows), max(r[1] for r in rows))
            right.plot([0, top], [0, top], color="#9e9e9e", linestyle="--", linewidth=1, label="Spend = budget")
            right.set_xlim(0, top * 1.05)
            right.set_ylim(0, top * 1.05)
            _peso_axis(right.xaxis)
            _peso_axis(right.yaxis)
            right.set_xlabel("Campaign budget")
            right.set_ylabel("Marketing costs")
            right.legend(fontsize=7, loc="upper left", frameon=False)
            whole = [r for r, f in zip(rows, inside) if f]
            if whole:
                exact = sum(1 for r in whole if abs(r[1] - r[0]) < 0.005)
                notes.append(f"{exact} of the {len(whole)} campaigns within the period spend their budget exactly")
        else:
            right.set_axis_off()
            right.text(0.5, 0.5, "no marketing costs in the period", ha="center", va="center", fontsize=9)
        right.set_title("Marketing costs by campaign", fontsize=10)
    else:
        right.set_axis_off()
        right.text(0.5, 0.5, "no marketing costs in this warehouse", ha="center", va="center", fontsize=9)
    return fig, "Spend against budget: " + "; ".join(notes) + "." if notes else "Spend against budget."


def measured_lift(src: Source) -> dict[int, float]:
    """Per targeted campaign with enough lines: its lift as the known-answer query measures it.

    The query (``fmcg_beam.truth``, ``data/known_answers/campaign_lift.sql``) is the Mantel-Haenszel odds ratio,
    over the campaign's days, of an order's first line being of the campaign's brand, in its target channels
    against the other accounts; a campaign whose smallest cell holds fewer lines than the query's ``min_cell``
    is left out, as the known-answer check leaves it out.
    """
    from fmcg_beam import truth

    spec = truth.known_answers()["campaign_lift"]
    out = {}
    cur = src.con.execute(truth.query("campaign_lift", src.truth_path))
    names = [d[0] for d in cur.description]
    for row in (dict(zip(names, r)) for r in cur.fetchall()):
        if row["measured_lift"] is not None and min(row["cells"]) >= spec["min_cell"]:
            out[int(row["campaign_id"])] = float(row["measured_lift"])
    return out


def campaign_lift(src: Source):
    if src.truth is None or src.truth_path is None:
        return "this warehouse has no ground_truth.json, so there is no planted lift to compare with"
    planted = [c for c in src.truth.get("campaign_lift") or [] if c.get("lift") is not None]
    if not planted:
        return "no campaign ran during the period, so there is no planted lift to show"
    targeted = [c for c in planted if not c.get("national")]
    if not targeted:
        return (f"the period's {_n(len(planted), 'campaign')} "
                + ("is national (every account), so no account is outside its target"
                   if len(planted) == 1 else "are all national (every account), so no account is outside their target")
                + " to measure the lift against")
    needs = {"fact_sales": ("sale_id", "order_id"), "dim_products": (), "dim_retailers_history": ()}
    missing = [t for t, cols in needs.items() if not src.has(t) or not set(cols) <= src.columns(t)]
    if missing:
        return (f"measuring the lift needs {', '.join(missing)} as this release writes them (order numbers, "
                "retailer history), which this warehouse does not hold")
    measured = measured_lift(src)
    if not measured:
        return (f"{'the' if len(targeted) == 1 else 'none of the'} period's {_n(len(targeted), 'targeted campaign')} "
                f"{'has not' if len(targeted) == 1 else 'has'} enough order lines in and out of its target to measure "
                "its lift")
    by_id = {int(c["campaign_id"]): float(c["lift"]) for c in planted}
    ids = sorted(i for i in measured if i in by_id)
    if not ids:
        return "the measured campaigns are not in ground_truth.json's campaign_lift"
    x = np.array([by_id[i] for i in ids])
    y = np.array([measured[i] for i in ids])
    # The axes span the planted lifts; a measurement far outside (a campaign with few lines) sits on the edge.
    lo = max(0.0, min(x.min(), 1.0) - 0.25)
    hi = x.max() * 1.4 + 0.1
    inside = (y >= lo) & (y <= hi)
    fig, ax = _figure()
    ax.grid(True, axis="x", color="#e5e5e5", linewidth=0.8)
    ax.scatter(x[inside], y[inside], s=18, alpha=0.75, color="#1f77b4", label="Campaign")
    if (~inside).any():
        ax.scatter(x[~inside], np.clip(y[~inside], lo, hi), s=30, marker="^", color="#ff7f0e",
                   label="Campaign measured outside the range shown")
    ax.plot([lo, hi], [lo, hi], color="#9e9e9e", linestyle="--", linewidth=1, label="Measured = planted")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("Planted lift (ground_truth.json)")
    ax.set_ylabel("Measured lift (odds ratio)")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ratio = float(np.median(y / x))
    return fig, (f"{len(ids)} of the period's {_n(len(targeted), 'targeted campaign')} measured by the known-answer query "
                 f"(the odds of an order's first line being the campaign brand's, in its target channels against the "
                 f"other accounts, day by day while it runs; the rest have too few lines, and national campaigns "
                 f"have no accounts outside their target); median measured/planted {ratio:.2f}"
                 + (f"; {int((~inside).sum())} outside the range shown." if (~inside).any() else "."))


def payroll_by_department(src: Source):
    if not src.has("fact_employees", "dim_departments"):
        return "needs fact_employees and dim_departments, which this warehouse does not hold"
    rows = src.rows("""
        SELECT f.date, d.department_name, sum(f.total_compensation)::DOUBLE
        FROM fact_employees f JOIN dim_departments d USING (department_id) GROUP BY ALL ORDER BY 1, 2""")
    if not rows:
        return "fact_employees is empty"
    months, depts, amounts = _by_month(rows)
    fig = _monthly_pesos([m.replace(day=1) for m in months], depts, amounts, "Employer cost (total_compensation)",
                         "Payroll month", "Department", 7)
    return fig, (f"Monthly payroll cost (gross pay plus employer contributions) by department: "
                 f"{_pesos(amounts.sum())} over {len(months)} month(s), "
                 f"{depts[0]} the largest at {amounts[0].sum() / amounts.sum():.0%}.")


@dataclass(frozen=True)
class Chart:
    title: str
    draw: Callable[[Source], object]


CHARTS = (
    Chart("Monthly sales by channel", monthly_sales_by_channel),
    Chart("Sales share by region against census population share", sales_share_by_region),
    Chart("Price index by category", price_index_by_category),
    Chart("Pareto curve of SKU revenue", sku_pareto),
    Chart("Inventory days of cover", days_of_cover),
    Chart("Costs against budgets", costs_against_budgets),
    Chart("Planted against measured campaign lift", campaign_lift),
    Chart("Payroll by department", payroll_by_department),
)


# --- the page ---------------------------------------------------------------------------------------------

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 60rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin: 2.2rem 0 0.4rem; border-top: 1px solid #ddd; padding-top: 1rem; }
.meta { color: #555; font-size: 0.9rem; }
figure { margin: 0; }
img { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.9rem; margin-top: 0.3rem; }
.note { background: #f6f6f6; border-left: 4px solid #bbb; padding: 0.6rem 0.9rem; color: #444; }
.error { border-left-color: #d62728; }
nav ol { columns: 2; font-size: 0.9rem; }
"""


def _header(src: Source) -> str:
    m, t = src.manifest, src.truth or {}
    start, end = src.period()
    record = m.get("warehouse") or {}
    seed = record.get("seed", t.get("seed"))
    scale = record.get("scale", t.get("scale"))
    bits = []
    if seed is not None:
        bits.append(f"seed {seed}")
    if scale is not None:
        bits.append(f"scale {scale:g}" if isinstance(scale, (int, float)) else f"scale {scale}")
    if start and end:
        bits.append(f"{start.isoformat()} to {end.isoformat()}")
    if m.get("version"):
        bits.append(f"fmcg-beam {m['version']}")
    if m.get("sink"):
        bits.append(f"--sink {m['sink']}")
    tables = m.get("tables") or {}
    rows = sum(int(v.get("rows", 0)) for v in tables.values() if isinstance(v, dict))
    if tables:
        bits.append(f"{len(tables)} tables, {rows:,} rows")
    return " · ".join(html.escape(str(b)) for b in bits)


def render(src: Source, charting: bool = True) -> tuple[str, list[str]]:
    """The page, and a warning per chart that failed (its note says why)."""
    return page_of(src, sections(src, range(len(CHARTS)), charting))


Section = tuple[str, Optional[str]]  # a chart's HTML section, and its warning if it failed


def sections(src: Source, charts: Sequence[int], charting: bool = True) -> list[Section]:
    """The sections of the charts ``CHARTS[i]`` for ``i`` in ``charts``, in that order."""
    out = []
    for i in charts:
        chart = CHARTS[i]
        warning = None
        try:
            drawn = chart.draw(src) if charting else \
                "matplotlib is not installed, so no chart was drawn; install it with pip install 'fmcg-beam[profile]'"
            if isinstance(drawn, str):
                body = f'<p class="note">{html.escape(drawn)}</p>'
            else:
                fig, caption = drawn
                body = (f'<figure><img alt="{html.escape(chart.title)}" src="data:image/png;base64,{_png(fig)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        except Exception as exc:  # one chart's failure is a note on the page, never a lost warehouse
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warning = f"{PAGE}: the chart '{chart.title}' could not be drawn: {first}"
            body = f'<p class="note error">This chart could not be drawn: {html.escape(first)}</p>'
        out.append((f'<section id="chart-{i + 1}"><h2>{html.escape(chart.title)}</h2>{body}</section>', warning))
    return out


def page_of(src: Source, drawn: Sequence[Section]) -> tuple[str, list[str]]:
    """The page of every chart's section (in ``CHARTS``' order), and their warnings."""
    nav = "".join(f'<li><a href="#chart-{i}">{html.escape(c.title)}</a></li>' for i, c in enumerate(CHARTS, 1))
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>fmcg-beam warehouse profile</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>A picture of the warehouse</h1>\n<p class=\"meta\">{_header(src)}</p>\n"
        f"<nav><ol>{nav}</ol></nav>\n" + "\n".join(body for body, _ in drawn) + "\n</body>\n</html>\n")
    return page, [w for _, w in drawn if w is not None]


def preload() -> None:
    """Import matplotlib in the background (a run calls this while DuckDB builds its file, which leaves the
    interpreter free), so drawing the page later does not wait for it."""
    import threading

    threading.Thread(target=_can_draw, name="profile-preload", daemon=True).start()


def _can_draw() -> bool:
    try:
        # Figures drawn on the Agg canvas directly: pyplot (and a host process's backend) is never touched.
        import matplotlib.figure  # noqa: F401 - what the charts use, loaded here once
        from matplotlib.backends import backend_agg  # noqa: F401
        return True
    except ImportError:
        return False


DRAW_SECONDS = 600.0  # what a page may take once the rest of the run is done (scale 100: about 10 s)


class Drawer(Forked):
    """Draws a run's page in a process of its own (``fmcg_beam.forked``), beside the rest of the run's work.

    Drawing is mostly Python (matplotlib), so in the run's process it would take turns with the change feed's
    Python for the interpreter, after the DuckDB build. ``start`` forks the drawing process as the run starts, and
    it loads matplotlib while the pipeline runs; ``submit`` hands it the finished Parquet files of a warehouse,
    which it reads while the run completes its DuckDB file, its change feed and its quality gate; ``result`` waits
    for the page. Where no process can be forked, ``start`` returns ``None`` and the run draws the page itself.
    """

    what = "the process drawing the page"

    def __init__(self, process, conn):
        super().__init__(process, conn)
        self.pending = False

    @classmethod
    def start(cls, close_fds: Sequence[int] = ()) -> Optional["Drawer"]:
        return cls.fork(_drawing_process, close_fds=close_fds, name="fmcg-beam-profile")

    def submit(self, root: Path, manifest: dict) -> None:
        """Start drawing the page of the warehouse whose Parquet files are complete in ``root``."""
        self.pending = True
        self.send((str(root), manifest))

    def result(self) -> tuple[str, list[str]]:
        """The page and its warnings; ``RuntimeError`` with the drawing's error if it could not be drawn."""
        self.pending = False
        outcome = self.receive(DRAW_SECONDS)
        if outcome[0] == "error":
            raise RuntimeError(outcome[1])
        return outcome[1], outcome[2]

    def close(self) -> None:
        """Stop the process: at once if it is still drawing a page no one will wait for."""
        if not self.pending:
            self.send(None)
        self.end(1.0 if not self.pending else 0)


def _drawing_process(conn) -> None:
    """``Drawer``'s process: a page for each warehouse it is handed, until it is handed ``None``."""
    from fmcg_beam.faults import first_line

    _can_draw()  # matplotlib loads while the run's pipeline runs (about 40 MB, on a core the pipeline leaves free)
    while True:
        job = next_request(conn)
        if job is None:
            return
        root, manifest = job
        try:
            conn.send(("page", *_draw_in_two(Path(root), manifest)))
        except Exception as exc:
            conn.send(("error", first_line(exc)))


def _draw_in_two(root: Path, manifest: dict) -> tuple[str, list[str]]:
    """The page, its charts drawn by this process and a fork of it, half each (drawing is Python: one interpreter
    each). A fork that fails leaves its half to this process. DuckDB reads the Parquet files on a quarter of the
    cores each: the run completes its warehouse meanwhile."""
    import pickle

    from fmcg_beam.worker import die_with

    if not _can_draw():
        return build(root, manifest, parquet=True)
    threads = max(1, (os.cpu_count() or 1) // 4)
    mine, theirs = range(0, len(CHARTS), 2), range(1, len(CHARTS), 2)
    me = os.getpid()
    read, write = os.pipe()
    pid = os.fork()  # this process holds one thread here (DuckDB's are started after)
    if pid == 0:
        status = 1
        try:
            os.close(read)
            die_with(me)
            src = open_source(root, manifest, True, threads)
            data = pickle.dumps(sections(src, theirs))
            with os.fdopen(write, "wb") as out:
                out.write(data)
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    src = open_source(root, manifest, True, threads)
    try:
        drawn = dict(zip(mine, sections(src, mine)))
        with os.fdopen(read, "rb") as inp:
            data = inp.read()
        _, status = os.waitpid(pid, 0)
        try:
            forked = pickle.loads(data) if status == 0 else []
        except Exception:
            forked = []
        if len(forked) != len(theirs):
            log.debug("the second drawing process failed (status %s); drawing its charts here", status)
            forked = sections(src, theirs)
        drawn.update(zip(theirs, forked))
        return page_of(src, [drawn[i] for i in range(len(CHARTS))])
    finally:
        src.con.close()


def build(root: Path, manifest: Optional[dict] = None, parquet: bool = False) -> tuple[str, list[str]]:
    """The page of the warehouse in ``root`` (a generation or staging folder) and its warnings; ``parquet``:
    read from its Parquet files (``open_source``)."""
    src = open_source(Path(root), manifest, parquet)
    try:
        charting = _can_draw()
        page, warnings = render(src, charting)
        if not charting:
            warnings.insert(0, f"{PAGE} holds no charts: matplotlib is not installed "
                               "(pip install 'fmcg-beam[profile]')")
        return page, warnings
    finally:
        src.con.close()


def write(root: Path, path: Optional[Path] = None, manifest: Optional[dict] = None) -> list[str]:
    """Write the page of the warehouse in ``root`` to ``path`` (default ``root/profile.html``), durably; each
    warning is also logged. ``manifest``: the warehouse's, where ``root`` holds none yet."""
    page, warnings = build(root, manifest)
    store(page, warnings, Path(path) if path is not None else Path(root) / PAGE)
    return warnings


def store(page: str, warnings: Sequence[str], path: Path) -> None:
    """Write a drawn ``page`` to ``path``, durably, and log its ``warnings``."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
        f.flush()
        os.fsync(f.fileno())
    for w in warnings:
        log.warning("%s", w)


def rebuild(target: Path) -> Path:
    """Rebuild ``profile.html`` of the warehouse in ``target`` under its lock; the path users open."""
    target = Path(os.path.abspath(os.path.expanduser(str(target))))
    if not outdir.has_warehouse(target):
        raise ProfileError(f"{target} holds no fmcg-beam warehouse; pass the --output_dir of a finished local run")
    with outdir.OutputDir(target) as out:
        current = out.current()
        if current is None or outdir.read_manifest(current / outdir.MANIFEST) is None:
            raise ProfileError(f"{target} holds no fmcg-beam warehouse; pass the --output_dir of a finished local run")
        tmp = current / f".{PAGE}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            write(current, tmp)
            out.replace_current(tmp, PAGE)
        finally:
            if tmp.exists():
                tmp.unlink()
    return target / PAGE


def _parser() -> argparse.ArgumentParser:
    from fmcg_beam.cli import SubcommandParser

    p = SubcommandParser("profile", "Rebuild profile.html, the page of charts, of an existing local warehouse.")
    p.add_argument("--output_dir", required=True, metavar="DIR",
                   help="the --output_dir of a finished local run, e.g. ./output")
    return p


def main(argv: Sequence[str]) -> int:
    """``python -m fmcg_beam profile --output_dir DIR``: 0 done, 2 not a warehouse, 1 a failure."""
    from fmcg_beam import cli

    target: list[Path] = []

    def work(args: argparse.Namespace) -> None:
        target.append(Path(args.output_dir))
        print(f"profile: {rebuild(target[0])}")

    return cli.run_subcommand(argv, _parser, work,
                              lambda: f"the warehouse in {target[0] if target else '?'} and its previous {PAGE} are "
                                      "unchanged")
