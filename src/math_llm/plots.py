"""Plots of exact match as PNG files: heatmaps over (digits of a, digits of b), one panel per operation, lines of
exact match versus length or training time, one per run, and exact match against parameters, one point per run."""

from matplotlib.figure import Figure  # a Figure without pyplot: no global backend or state, files only
from matplotlib.ticker import MaxNLocator


def save_grid_heatmap(grid, path, title):
    """`grid`: {operation: {"AxB": {"exact_match", "count"}}} as evaluate() returns it. Cells with more than two
    operands have no place on the plane and are left out. Returns whether anything was drawn."""
    panels = {}
    for operator, cells in grid.items():
        pairs = {tuple(map(int, digits.split("x"))): values for digits, values in cells.items()
                 if digits.count("x") == 1}
        if pairs:
            panels[operator] = pairs
    if not panels:
        return False
    figure = Figure(figsize=(5.2 * len(panels), 4.6), layout="tight")
    for axis, (operator, pairs) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        rows = max(a for a, _ in pairs)
        columns = max(b for _, b in pairs)
        values = [[pairs.get((a, b), {}).get("exact_match", float("nan")) for b in range(1, columns + 1)]
                  for a in range(1, rows + 1)]
        image = axis.imshow(values, vmin=0, vmax=1, cmap="RdYlGn", origin="lower",
                            extent=(0.5, columns + 0.5, 0.5, rows + 0.5))
        if rows * columns <= 144:  # small enough to print every cell's value
            for (a, b), cell in pairs.items():
                axis.text(b, a, f"{100 * cell['exact_match']:.0f}", ha="center", va="center", fontsize=7)
        axis.set(title=f"{operator}: exact match (%)", xlabel="digits of b", ylabel="digits of a",
                 xticks=range(1, columns + 1), yticks=range(1, rows + 1))
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return True


def save_length_plot(curves, path, title, trained_lengths=None):
    """Exact match versus length, one line per run; `curves`: {label: {"length": {"exact_match", "count"}}} as
    evaluate() returns exact_match_by_length. `trained_lengths` (lowest, highest) is shaded: the range the model
    was trained on. Returns the figure."""
    figure = Figure(figsize=(7.5, 4.2), layout="tight")
    axis = figure.subplots()
    if trained_lengths:
        axis.axvspan(trained_lengths[0] - 0.5, trained_lengths[1] + 0.5, color="0.88", label="training lengths")
    for label, by_length in curves.items():
        lengths = sorted(int(length) for length in by_length)
        axis.plot(lengths, [100 * by_length[str(length)]["exact_match"] for length in lengths], marker=".",
                  label=label)
    axis.set(title=title, xlabel="digits of the longest operand", ylabel="exact match (%)", ylim=(-2, 102))
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # no tick at 2.5 digits
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return figure


def save_curves(curves, path, title):
    """Exact match against seconds of training steps (log scale), one line per run, the runs of a label (a recipe's
    seeds) in one colour and legend entry; `curves`: {label: [[(seconds, exact match)] of each run]}. Returns whether
    anything was drawn."""
    curves = {label: [points for points in runs if points] for label, runs in curves.items()}
    curves = {label: runs for label, runs in curves.items() if runs}
    if not curves:
        return False
    figure = Figure(figsize=(8.5, 4.8), layout="tight")
    axis = figure.subplots()
    for label, runs in curves.items():
        colour = None
        for points in runs:
            line, = axis.plot([max(seconds, 0.1) for seconds, _ in points], [100 * value for _, value in points],
                              marker=".", linewidth=1, color=colour, label=None if colour else label)
            colour = line.get_color()
    axis.set(title=title, xscale="log", xlabel="seconds of training steps", ylabel="exact match (%)", ylim=(-2, 102))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return True


def save_scaling_plot(panels, path, title, target):
    """Exact match against unique parameters (log scale), one panel per set and one point per run; `panels`: {set
    name: [{"parameters", "exact_match", "layers", "rank", "pos_encoding"}]}. The colour tells the number of layers,
    the marker full rank (o) from low rank (^: a rank is set), a hollow marker a position encoding other than learned
    absolute positions; a dashed line marks `target`. Returns the figure."""
    figure = Figure(figsize=(6 * len(panels), 4.4), layout="tight")
    colours = {layers: f"C{index}" for index, layers in
               enumerate(sorted({point["layers"] for points in panels.values() for point in points}))}
    for axis, (set_name, points) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        groups = {}
        for point in points:
            key = point["layers"], point["rank"] is not None, point.get("pos_encoding", "learned")
            groups.setdefault(key, []).append(point)
        for (layers, low_rank, encoding), group in sorted(groups.items()):
            hollow = encoding != "learned"
            axis.scatter([point["parameters"] for point in group], [100 * point["exact_match"] for point in group],
                         marker="^" if low_rank else "o", alpha=0.8, facecolors="none" if hollow else colours[layers],
                         edgecolors=colours[layers], label=f"{layers} layer{'s' * (layers != 1)}, "
                                                           f"{'low' if low_rank else 'full'} rank, {encoding} positions")
        axis.axhline(100 * target, color="0.4", linestyle="--", linewidth=1, label=f"{100 * target:g}%")
        axis.set(title=f"exact match on {set_name}", xscale="log", xlabel="unique parameters",
                 ylabel="exact match (%)", ylim=(-2, 102))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return figure
