"""``bench``'s report: the text tables of the speed, memory and cross-backend results."""

from .bench_timing import Shape


def render(table, widths, left):
    """Lines of a text table: the first ``left`` columns left-aligned, the rest right-aligned;
    a column is widened to its longest value (long variant specs) in the full rows."""
    widths = [
        max([width] + [len(str(row[column])) for row in table if len(row) == len(widths)])
        for column, width in enumerate(widths)
    ]
    return [
        " ".join(
            f"{value:<{width}}" if column < left else f"{value:>{width}}"
            for column, (value, width) in enumerate(zip(values, widths, strict=False))
        ).rstrip()
        for values in table
    ]


def number(value, spec):
    return "" if value is None else format(value, spec)


def format_table(rows, peak):
    """One line per (shape, variant, jit_compile): ours, stock, torch, the ratios; throughput."""
    anchored = any(row["anchor"] for row in rows)
    torch_head = ("torch", "ratio") if anchored else ()
    table = [
        (
            *("shape BxTxFxU", "variant", "jit", "train ms", "stock", "ratio", *torch_head),
            *("infer ms", "stock", "ratio", *torch_head),
            *("GFLOP/s", "%peak", "jit/no", "compile s"),
        )
    ]
    for row in rows:

        def times(mode, row=row):
            ms, ratio = (f"anchor_{mode}_ms", f"anchor_{mode}_ratio")
            torch = (number(row[ms], ".1f"), number(row[ratio], ".2f")) if anchored else ()
            return (
                number(row[f"{mode}_ms"], ".1f"),
                number(row[f"stock_{mode}_ms"], ".1f"),
                number(row[f"{mode}_ratio"], ".2f"),
                *torch,
            )

        table.append(
            (
                *(row["shape"], row["variant"], "yes" if row["jit_compile"] else "no"),
                *times("train"),
                *times("predict"),
                number(row["train_gflops"], ".1f"),
                number(100 * row["train_peak_fraction"], ".1f"),
                number(row["jit_vs_no_jit_train"], ".2f"),
                number(row["compile_s"], ".1f"),
            )
        )
    title = f"GEMM peak {peak:.0f} GFLOP/s; minimum over the repeats; ratio = ours / stock"
    if anchored:
        title += " and ours / torch.nn (same threads)"
    head = (8, 8, 5, *((7, 5) if anchored else ()))
    widths = (17, 9, 3, *head, *head, 7, 5, 6, 9)
    return "\n".join([title, *render(table, widths, left=3)])


def format_memory(results):
    """One line per memory measurement: peak RSS of the process and of the call."""
    table = [("memory", "mode", "shape BxTxFxU", "peak RSS MB", "call MB", "s")]
    for r in results:
        head = (r["model"], r["mode"], str(Shape(**r["shape"])))
        if "error" in r:
            table.append((*head, "FAILED: " + " ".join(r["error"])))
        else:
            sizes = (number(r["peak_rss_mb"], ".0f"), number(r["call_mb"], ".0f"))
            table.append((*head, *sizes, number(r["seconds"], ".1f")))
    return "\n".join(render(table, (10, 7, 17, 11, 8, 6), left=3))


def format_versions(found):
    return ", ".join(f"{name} {version}" for name, version in found.items())


def format_backends(runs):
    """One line per (shape, variant): train / infer ms on every backend, side by side."""
    columns = [one["backend"] for one in runs if "error" not in one]
    times = {}
    for one in runs:
        for r in one.get("records", ()):
            key = (str(Shape(**r["shape"])), r["model"], r["jit_compile"])
            times.setdefault(key, {})[one["backend"]] = r
    table = [("shape BxTxFxU", "model", "jit", *(f"{b} train/infer ms" for b in columns))]
    for (shape, model, jit), by_backend in times.items():
        cells = []
        for backend in columns:
            r = by_backend.get(backend)
            cells.append(f"{r['train_ms']:.1f} / {r['predict_ms']:.1f}" if r else "")
        jit_text = "" if jit is None else ("yes" if jit else "no")
        table.append((shape, model, jit_text, *cells))
    widths = (17, 9, 3) + (len(table[0][3]),) * len(columns)
    return "\n".join(["side by side (minimum over the repeats)", *render(table, widths, left=3)])
