"""How the analysis tools write what they found: CSV files (a whole table written
atomically, or appended row by row as rows finish), the tables they print (rich) and their
plots (matplotlib without a display, saved atomically).

``tools/analysis/autotune.py`` (:mod:`~expedite_mm.analysis.autotune_output`) and
``tools/analysis/sweep.py`` (:mod:`~expedite_mm.analysis.sweep`) both write through these,
so a value reads the same in every CSV, and a reader never sees half a file.
"""
from __future__ import annotations

import csv
import json
import os
import os.path as osp
import uuid
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Sequence, Tuple

#: the dots per inch of every plot
DPI = 120


# --------------------------------------------------------------------------- files
def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Write a file through a temporary one renamed onto ``path`` (readers never see half a
    file); its folder is created.

    ``write`` creates the file, so it gets the usual permissions (the umask's), not a
    temporary file's private ones.

    Args:
        path: the file to write.
        write: called with the temporary path (same folder and extension as ``path``); it
            writes the whole file there.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex}{osp.splitext(path)[1]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (atomically).

    Args:
        path: the file to write.
        text: its whole content.
    """
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    write_atomic(path, write)


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as indented JSON (atomically; what JSON cannot hold as ``str``).

    Args:
        path: the JSON file.
        value: the value.
    """
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2, default=str)
    write_atomic(path, write)


# --------------------------------------------------------------------------- CSV
def csv_value(value: Any) -> str:
    """One CSV cell: empty for None, ``1`` / ``0`` for booleans, floats to 6 significant
    digits, anything else as ``str``.

    Args:
        value: the value of the cell.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _csv_row(row: Mapping[str, Any], columns: Sequence[str]) -> Dict[str, str]:
    return {c: csv_value(row.get(c)) for c in columns}


def write_csv(path: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write a whole table (atomically): a header, then one line per row.

    Args:
        path: the CSV file.
        rows: the rows; a column a row lacks is empty, keys not in ``columns`` are left out.
        columns: the header, in order.
    """
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(_csv_row(row, columns) for row in rows)
    write_atomic(path, write)


def append_csv_row(path: str, row: Mapping[str, Any], columns: Sequence[str]) -> None:
    """Add one row to a CSV file (its folder, file and header are created first if missing).

    Args:
        path: the CSV file.
        row: the row; a column it lacks is empty.
        columns: the file's header, in order.
    """
    new = not osp.exists(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        if new:
            writer.writeheader()
        writer.writerow(_csv_row(row, columns))


# --------------------------------------------------------------------------- tables
def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                right: Collection[str] = (), styles: Optional[Sequence[Optional[str]]] = None,
                width: int = 160) -> None:
    """Print a table on stdout (rich).

    Args:
        title: above the table.
        columns: the header.
        rows: the cells of each row, as text, in the order of ``columns``.
        right: the columns justified right (the others left).
        styles: a rich style per row (None: plain).
        width: the console width in characters.
    """
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    for i, cells in enumerate(rows):
        table.add_row(*cells, style=styles[i] if styles is not None else None)
    Console(width=width).print(table)


# --------------------------------------------------------------------------- plots
def new_figure(columns: int = 1, size: Tuple[float, float] = (7, 4.5)) -> Tuple[Any, Any]:
    """A figure of ``columns`` axes side by side (matplotlib's headless backend).

    Args:
        columns: how many axes.
        size: the figure's size in inches (width, height).

    Returns:
        ``(figure, axes)``: one axes, or a sequence of them for ``columns > 1``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(1, columns, figsize=size)


def finish_axes(ax: Any, xlabel: str, ylabel: str, title: str,
                legend_size: Optional[float] = None) -> None:
    """Label one axes the way every plot of the tools is labelled: the axis names, a small
    title, a light grid, and a legend of the labelled artists.

    Args:
        ax: the matplotlib axes.
        xlabel: the x axis's name.
        ylabel: the y axis's name.
        title: the axes' title (font size 9).
        legend_size: the legend's font size; None: no legend.
    """
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if legend_size is not None:
        ax.legend(fontsize=legend_size)


def save_figure(fig: Any, path: str) -> None:
    """Lay the figure out, write it (atomically, in the format of ``path``'s extension,
    PNG without one) and close it.

    Args:
        fig: the matplotlib figure.
        path: the image file.
    """
    import matplotlib.pyplot as plt
    fig.tight_layout()
    image_format = osp.splitext(path)[1][1:].lower() or "png"
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format=image_format))
    plt.close(fig)
