"""The table as text: markdown, LaTeX and CSV, with the notes under it."""

from __future__ import annotations

import csv
import io
import re
from typing import Callable

from dann.report.paper import STAND_INS
from dann.report.table import DEFAULT_SELECTION, ORACLE_SELECTIONS, Table


NO_RUNS = "no runs"  # an empty cell


# -- text from records, escaped for each format ------------------------------------------------
#: characters that move a terminal's cursor or end a line (a record's name could hold them)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def plain(s: object) -> str:
    """Text from a record as plain text: control characters shown as escapes (``\\n``, ``\\x1b``)."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], str(s))


def md(s: object) -> str:
    """Text from a record as markdown shows it literally: no table cell ended by ``|``, no HTML
    (``<script>``), no link or image, no code span; control characters shown as escapes."""
    s = re.sub(r"([\\|<>`])", r"\\\1", str(s)).replace("&", "&amp;").replace("](", "]\\(")
    return plain(s)


def cell(s: object) -> str:
    """Text from a record as a CSV cell: a leading ``= + - @`` would make a spreadsheet run it as a formula."""
    s = plain(s)
    return "'" + s if s[:1] in ("=", "+", "-", "@") else s


def fmt(x: float) -> str:
    """Accuracies the paper's way: ``.7512`` (``1.000`` and negatives keep their sign)."""
    s = f"{x:.4f}"
    return s[1:] if s.startswith("0.") else ("-" + s[2:] if s.startswith("-0.") else s)


def cell_text(t: Table, pair: str, method: str, pm: str = "±") -> str:
    c = t.cells.get((pair, method))
    paper, stand_in = t.paper(pair, method)
    if c is None:  # nothing ran: no paper number beside it, as if it were a result
        return NO_RUNS
    parts = [f"{fmt(c.mean)} {pm} {fmt(c.std) if c.std is not None else '—'} ({c.n})"]
    if paper is not None:
        off = t.off_protocol(pair, method)
        protocol = f" at {', '.join(f'{k}={v}' for k, v, _ in off)}; here {', '.join('/'.join(h) for _, _, h in off)}" \
            if off else ""
        parts.append(f"[paper{'*' if stand_in else ''} {fmt(paper)}{protocol}]")
    g = t.gap(pair, method)
    if g is not None:
        pg = t.paper_gap(pair, method)
        parts.append(f"gap {g:.1f}%" + (f" [paper {pg:.1f}%]" if pg is not None else ""))
    if c is not None and c.oracle:
        parts.append("{" + "+".join("last step" if x == DEFAULT_SELECTION else x
                                    for x in sorted(set(c.selections))) + "}")
    return " ".join(parts)


def _num(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "?"


def notes(t: Table, esc: Callable[[object], str] = plain) -> list[str]:
    """Lines under the table: what the cells mean, then failed, skipped and unreadable runs. Every
    piece of text that comes from a record (names, keys, values, paths, errors) goes through
    ``esc``, the output format's escaping."""
    e = esc
    out = [f"Cells: {e(t.metric)}, mean ± sample std (number of seeds) over finished runs."]
    if t.compare_with_paper and any(t.paper(p, m)[0] is not None for p in t.pairs for m in t.methods):
        out.append("[paper x]: Ganin et al. 2016, Table 2; gap: (method - source_only) / "
                   "(target_only - source_only) from our own means in the same column (same pair and protocol).")
        if any(t.off_protocol(p, m) for p in t.pairs for m in t.methods):
            out.append("[paper x at key=value; here y]: these runs differ from the protocol of the paper's number "
                       "(batch 128 = 64 + 64, the paper's network for the pair, and the length of our runs of record: "
                       "the paper gives none) in the keys named: not a like-for-like comparison.")
        stand_ins = sorted({t.column(c).pair for c in t.pairs} & set(STAND_INS))
        if stand_ins:
            out.append("paper*: the paper's number for the original pair this regenerated domain stands in for ("
                       + ", ".join(f"{p} -> {STAND_INS[p]}" for p in stand_ins) + ").")
    if t.splits:
        out.append("Runs of different protocols are not averaged: " + "; ".join(map(e, t.splits)) + ".")
    if t.unfelt:
        out.append("Averaged across a key the method does not train on: " + "; ".join(map(e, t.unfelt)) + ".")
    if t.merged:
        out.append("On request (--merge), runs that differ in " + ", ".join(map(e, t.merged))
                   + " ARE averaged together.")
    marked = sorted(e(f"{m} on {p}: {c.selection}") for (p, m), c in t.cells.items() if c.oracle)
    rules = sorted({x for c in t.cells.values() for x in c.selections} - {DEFAULT_SELECTION, *ORACLE_SELECTIONS})
    out.append("Model selection: last step (the weights at the end of training) in every cell"
               + (f", except rows named (rule), chosen by that label-free rule: {', '.join(map(e, rules))}"
                  if rules else "")
               + ("; except cells marked {oracle}, whose runs chose on target test labels: " + "; ".join(marked)
                  if marked else "")
               + ".")
    if t.copies:
        out.append(f"Records read more than once (the same run, counted once): {len(t.copies)}")
        out += [f"- {e(p)} = " + ", ".join(map(e, c)) for p, c in t.copies]
    if t.duplicates():
        out.append("Warning: repeated seeds averaged as separate runs: " + "; ".join(map(e, t.duplicates())))
    if t.collapsed:
        out.append(f"Runs whose label classifier collapsed to chance during training (averaged: their last step is "
                   f"what they produced): {len(t.collapsed)}")
        out += [f"- {e(p)}: at step {e(step)}" for p, step in t.collapsed]
    if t.at_chance:
        out.append(f"Runs with source accuracy at chance (averaged, but they learnt nothing, not even on the labelled "
                   f"source: e.g. optim.lr too large): {len(t.at_chance)}")
        out += [f"- {e(p)}: test/src_acc {_num(acc)} (chance {_num(chance)})" for p, acc, chance in t.at_chance]
    if t.diverged:
        out.append(f"Runs whose training loss diverged (not averaged: their numbers are those of blown-up weights; "
                   f"lower optim.lr): {len(t.diverged)}")
        out += [f"- {e(p)}: from step {e(step)}" for p, step in t.diverged]
    if t.failed:
        out.append(f"Failed or unfinished runs (not averaged): {len(t.failed)}")
        out += [f"- {e(r.get('_path', '?'))}: status {e(r['status'])}"
                + (f", error: {e(r['error'])}" if r.get("error") else "") for r in t.failed]
    if t.skipped:
        out.append(f"Finished runs without {e(t.metric)} (not averaged): {len(t.skipped)}")
        out += [f"- {e(p)}: {e(why)}" for p, why in t.skipped]
    if t.unreadable:
        out.append(f"Unreadable records (not averaged): {len(t.unreadable)}")
        out += [f"- {e(p)}: {e(why)}" for p, why in t.unreadable]
    if t.unrecorded:
        out.append(f"Run folders without a record (still running, or killed before writing one): {len(t.unrecorded)}")
        out += [f"- {e(d)}" for d in t.unrecorded]
    return out


def render_markdown(t: Table) -> str:
    rows = ["| method | " + " | ".join(map(md, t.pairs)) + " |", "|---" * (len(t.pairs) + 1) + "|"]
    rows += [f"| {md(m)} | " + " | ".join(md(cell_text(t, p, m)) for p in t.pairs) + " |" for m in t.methods]
    return "\n".join(rows) + "\n\n" + "\n".join(notes(t, md)) + "\n"


TEX_SPECIAL = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               **{c: "\\" + c for c in "&%_#{}$"}}


def _tex(s: object) -> str:
    """Text as LaTeX prints it literally: every special character escaped (a record's name could
    hold ``\\input{...}``), control characters as spaces."""
    return re.sub(r"[\\~^&%_#{}$]", lambda m: TEX_SPECIAL[m.group()], CONTROL.sub(" ", str(s)))


def render_latex(t: Table) -> str:
    lines = [r"\begin{tabular}{l" + "l" * len(t.pairs) + "}", r"\hline",
             "method & " + " & ".join(_tex(p).replace("—", "--") for p in t.pairs) + r" \\", r"\hline"]
    for m in t.methods:
        cells = [_tex(cell_text(t, p, m, pm="±")).replace("±", r"$\pm$").replace("—", "--") for p in t.pairs]
        lines.append(_tex(m).replace("—", "--") + " & " + " & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines + ["% " + n for n in notes(t, lambda x: CONTROL.sub(" ", str(x)))]) + "\n"


CSV_FIELDS = ("pair", "method", "n", "mean", "std", "seeds", "selection", "paper", "gap_closed_pct", "paper_gap_pct",
              "off_paper_protocol")


def render_csv(t: Table) -> str:
    """Long form, one row per (pair, method); failed/unreadable runs go to stderr, not here."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for m in t.methods:
        for p in t.pairs:
            c = t.cells.get((p, m))
            if c is None:
                continue
            paper, _ = t.paper(p, m)
            g, pg = t.gap(p, m), t.paper_gap(p, m)
            w.writerow({"pair": cell(p), "method": cell(m), "n": c.n, "mean": f"{c.mean:.6f}",
                        "std": "" if c.std is None else f"{c.std:.6f}", "seeds": " ".join(map(str, c.seeds)),
                        "selection": cell(c.selection), "paper": "" if paper is None else paper,
                        "gap_closed_pct": "" if g is None else f"{g:.2f}", "paper_gap_pct": "" if pg is None else pg,
                        "off_paper_protocol": "; ".join(f"{k}={'/'.join(h)} (paper {v})"
                                                        for k, v, h in t.off_protocol(p, m))})
    return buf.getvalue()


RENDER = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}
