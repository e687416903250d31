"""A timeline chart of a fault run: per-call latency and outcome, breaker state, outages.

Used by the chaos soak (:func:`redisguard.testing.run_soak`) and usable by anything that can
describe its run as a :class:`Timeline`. matplotlib is an optional extra
(``pip install 'redisguard[plot]'``); it is imported only when a chart is drawn.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["PLOT_EXTRA_HINT", "Timeline", "plot_timeline"]

PLOT_EXTRA_HINT = (
    "plotting needs matplotlib: pip install 'redisguard[plot]' (or pip install matplotlib)"
)

# Outcome -> (colour, marker); anything else is drawn as an error.
_OUTCOME_STYLE = {
    "ok": ("#2b8a3e", "."),
    "miss": ("#868e96", "."),
    "fallback": ("#f08c00", "x"),
    "unavailable": ("#c92a2a", "x"),
    "error": ("#862e9c", "D"),
}
_SHADES = ("#ced4da", "#a5d8ff", "#d0bfff", "#ffd8a8", "#c3fae8", "#eebefa", "#ffec99")
_STATE_COLOURS = {"closed": "#d3f9d8", "half-open": "#fff3bf", "open": "#ffc9c9"}


@dataclass(frozen=True)
class Timeline:
    """What a timeline chart shows; times are seconds from the start of the run.

    Attributes:
        calls: ``(start, latency_seconds, outcome)`` per call; outcome is ``"ok"``,
            ``"miss"``, ``"fallback"``, ``"unavailable"`` or ``"error"``.
        states: ``(time, state)`` breaker transitions (the state holds from ``time`` on),
            starting with the initial state at 0.
        outages: ``(start, end, label)`` for each injected fault, drawn shaded.
        end: Length of the run in seconds.
        title: Chart title.
    """

    calls: Sequence[tuple[float, float, str]]
    states: Sequence[tuple[float, str]]
    outages: Sequence[tuple[float, float, str]]
    end: float
    title: str = ""


class _HasTimeline(Protocol):
    def timeline(self) -> Timeline: ...


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")  # files only: never needs a display
        return importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:
        raise ImportError(PLOT_EXTRA_HINT) from exc


def plot_timeline(records: Timeline | _HasTimeline, path: str | Path) -> Path:
    """Draw ``records`` to ``path`` as SVG or PNG (chosen by the file's suffix).

    The top panel shows each call's latency (log scale) coloured by outcome, with outages
    shaded; the bottom band shows the breaker state over time.

    Args:
        records: A :class:`Timeline`, or an object with a ``timeline()`` method (a soak
            result).
        path: Where to write; the suffix must be ``.svg`` or ``.png``.

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is not installed (the message names the extra).
        ValueError: the suffix is not ``.svg`` or ``.png``.
    """
    out = Path(path)
    if out.suffix.lower() not in {".svg", ".png"}:
        raise ValueError(f"plot file must end in .svg or .png, got {out.name!r}")
    timeline = records if isinstance(records, Timeline) else records.timeline()
    plt = _pyplot()
    fig, (top, band) = plt.subplots(
        2, 1, sharex=True, figsize=(13, 5.5), gridspec_kw={"height_ratios": [5, 1]}
    )
    try:
        _draw_calls(top, timeline)
        _draw_states(band, timeline)
        band.set_xlabel("seconds since start")
        band.set_xlim(0, max(timeline.end, 1e-3))
        if timeline.title:
            fig.suptitle(timeline.title)
        fig.tight_layout()
        fig.savefig(out, format=out.suffix.lower().lstrip("."), dpi=110)
    finally:
        plt.close(fig)
    return out


def _draw_calls(ax: Any, timeline: Timeline) -> None:
    # One shade per fault kind, named in the legend: labels over each outage would collide.
    shades: dict[str, str] = {}
    for start, end, label in timeline.outages:
        shade = shades.setdefault(label, _SHADES[len(shades) % len(_SHADES)])
        ax.axvspan(start, end, color=shade, alpha=0.45, lw=0)
    outage_handles = [_patch(shade, f"outage: {label}") for label, shade in shades.items()]
    known = set(_OUTCOME_STYLE)
    styles = [*_OUTCOME_STYLE.items(), ("other", ("#343a40", "+"))]
    for outcome, (colour, marker) in styles:
        points = [
            (t, max(lat, 1e-5) * 1000)
            for t, lat, o in timeline.calls
            if o == outcome or (outcome == "other" and o not in known)
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=4, c=colour, marker=marker, label=outcome, linewidths=0.6)
    ax.set_yscale("log")
    ax.set_ylabel("call latency (ms)")
    ax.grid(True, which="both", alpha=0.2)
    handles, _labels = ax.get_legend_handles_labels()
    ax.legend(
        handles=[*handles, *outage_handles], loc="upper left", bbox_to_anchor=(1.01, 1.0),
        fontsize=8, markerscale=3,
    )  # fmt: skip


def _draw_states(ax: Any, timeline: Timeline) -> None:
    states = list(timeline.states) or [(0.0, "closed")]
    for (start, state), nxt in zip(states, [*states[1:], (timeline.end, "")], strict=True):
        ax.axvspan(start, max(nxt[0], start), color=_STATE_COLOURS.get(state, "#e9ecef"), lw=0)
    for start, end, _label in timeline.outages:
        ax.axvspan(start, end, ymin=0, ymax=0.15, color="#495057", lw=0)
    ax.set_yticks([])
    ax.set_ylabel("breaker", rotation=0, ha="right", va="center")
    handles = [_patch(colour, state) for state, colour in _STATE_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)


def _patch(colour: str, label: str) -> Any:
    return importlib.import_module("matplotlib.patches").Patch(color=colour, label=label)
