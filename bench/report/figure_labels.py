"""Point labels placed without collisions (matplotlib, deterministic): each label tries offsets around its point,
nearest first, and takes the first whose text box (the renderer's `get_window_extent`) lies inside the axes and
overlaps no label placed before it and no obstacle (markers, error bars); a label that finds no free slot
next to its point goes to the nearest free one farther out, joined to its point by a leader line. Only the
label-label rule is hard: when the axes are so crowded that no slot avoids the obstacles too, a label may
cover a marker, never another label."""

from __future__ import annotations

import math

LABEL_GID = "point-label"  # the gid of every placed label (tests and readers find them by it)
NEAR = 5.0  # points between a point and its label when it sits beside it (no leader line)
RINGS = (14.0, 24.0, 36.0, 50.0, 66.0, 84.0, 104.0, 126.0, 150.0, 176.0, 204.0)  # farther slots, leader line
PAD = 1.5  # pixels around a text box that must stay free too


def _near_offsets():
    """(dx, dy, ha, va) in points: right, left, above, below, then the diagonals."""
    d, e = NEAR, NEAR * 0.8
    return [(d, 0, "left", "center"), (-d, 0, "right", "center"), (0, d, "center", "bottom"),
            (0, -d, "center", "top"), (e, e, "left", "bottom"), (e, -e, "left", "top"),
            (-e, e, "right", "bottom"), (-e, -e, "right", "top")]


def _ring_offsets(radius: float):
    """16 directions at `radius` points, starting to the right, counter-clockwise; the text's alignment
    faces away from the point, so the box never covers it."""
    out = []
    for k in range(16):
        angle = 2 * math.pi * k / 16
        dx, dy = radius * math.cos(angle), radius * math.sin(angle)
        ha = "left" if dx > 1e-9 else "right" if dx < -1e-9 else "center"
        va = "bottom" if dy > 1e-9 else "top" if dy < -1e-9 else "center"
        out.append((round(dx, 6), round(dy, 6), ha, va))
    return out


def text_box(text, renderer):
    """The display-space box of a text's glyphs alone (an annotation's own extent also spans its leader)."""
    from matplotlib.text import Annotation, Text

    if isinstance(text, Annotation):  # its text transform follows `xytext` only once updated
        text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def marker_box(ax, x: float, y: float, size_pt: float):
    """The display-space box of a marker of `size_pt` points drawn at data (x, y)."""
    from matplotlib.transforms import Bbox

    px, py = ax.transData.transform((x, y))
    half = size_pt / 2 * ax.figure.dpi / 72 + 1
    return Bbox.from_extents(px - half, py - half, px + half, py + half)


def errorbar_box(ax, x: float, low: float, high: float, cap_pt: float):
    """The display-space box of a vertical error bar (with caps of `cap_pt` points) at data x from low to high."""
    from matplotlib.transforms import Bbox

    px, p_low = ax.transData.transform((x, low))
    _, p_high = ax.transData.transform((x, high))
    half = cap_pt * ax.figure.dpi / 72 + 1
    return Bbox.from_extents(px - half, min(p_low, p_high), px + half, max(p_low, p_high))


def _overlaps(box, boxes) -> bool:
    return any(box.overlaps(other) for other in boxes)


def _inside(box, frame) -> bool:
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1


def place_labels(ax, items, obstacles=(), fontsize: float = 6, color: str = "black"):
    """Annotate each (text, (x, y)) of `items` (data coordinates), in order, at the first free slot (see the
    module docstring); returns the annotations. Call once the axes' scales and limits are final (they are
    frozen here) and every obstacle box is known."""
    fig = ax.figure
    ax.set_xlim(ax.get_xlim())  # freeze the autoscaled limits: the boxes are measured against them
    ax.set_ylim(ax.get_ylim())
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    obstacles = list(obstacles)
    placed = []
    labels = []
    near = [(offset, False) for offset in _near_offsets()]
    far = [(offset, True) for radius in RINGS for offset in _ring_offsets(radius)]
    for text, xy in items:
        probe = ax.annotate(text, xy, xytext=(0, 0), textcoords="offset points", fontsize=fontsize)
        choice = None
        # first beside the point, then farther out with a leader line: free of obstacles, then of labels only
        for candidates, avoid in ((near + far, placed + obstacles), (near + far, placed)):
            for (dx, dy, ha, va), leader in candidates:
                probe.set_position((dx, dy))
                probe.set_horizontalalignment(ha)
                probe.set_verticalalignment(va)
                box = text_box(probe, renderer).padded(PAD)
                if _inside(box, frame) and not _overlaps(box, avoid):
                    choice = (dx, dy, ha, va, leader, box)
                    break
            if choice:
                break
        probe.remove()
        if choice is None:  # nowhere free inside the axes: beside the point, outside the rule (never seen)
            dx, dy, ha, va = _near_offsets()[0]
            choice = (dx, dy, ha, va, False, None)
        dx, dy, ha, va, leader, box = choice
        arrow = {"arrowstyle": "-", "color": "0.45", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 2} if leader else None
        label = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha,
                            va=va, color=color, arrowprops=arrow, gid=LABEL_GID)
        placed.append(box if box is not None else text_box(label, renderer).padded(PAD))
        labels.append(label)
    return labels


def label_boxes(fig):
    """The display-space text boxes of every placed label of `fig` (drawn first, so they are final)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), text_box(t, renderer)) for ax in fig.axes for t in ax.texts if t.get_gid() == LABEL_GID]
