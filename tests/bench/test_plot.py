"""latency_vs_map.png people can read: each backend's accuracy budget (its FP32 mAP less the recommendation's
max_map_drop) as a dashed line, the recommended point ringed, the legend beside the axes rather than on the
points."""
from __future__ import annotations

import pytest

from fastdet_cli.bench.report import BenchReport
from fastdet_cli.render.bench import plot_figure, plot_png

plt = pytest.importorskip("matplotlib.pyplot", reason="the plot extra (matplotlib) is not installed")


def _row(backend: str, precision: str, ms: float, m: float) -> dict:
    return {"backend": backend, "precision": precision, "status": "ok", "runtime_ms": {"mean": ms}, "map": m,
            "end2end_ms": None, "int8_artifact": None}


REPORT = BenchReport.from_dict({
    "schema": "fastdet-bench/2", "machine": {},
    "rows": [_row("ort", "fp32", 74.0, 1.0), _row("ort", "int8", 47.0, 0.89),
             _row("openvino", "fp32", 73.0, 1.0), _row("openvino", "int8", 45.0, 0.996)],
          "recommendation": {"text": "INT8 on openvino", "backend": "openvino", "precision": "int8",
                             "latency": "runtime", "max_map_drop_points": 0.5},
          "settings": {"metric": "agreement mAP"}})


def test_budget_line_recommended_ring_and_legend_off_the_data():
    fig = plot_figure(REPORT, plt)
    ax = fig.axes[0]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(0.995)  # both FP32 at 1.0: one line
    rings = [c for c in ax.collections if len(c.get_facecolors()) == 0]
    assert len(rings) == 1 and tuple(rings[0].get_offsets()[0]) == (45.0, 0.996)
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, not over the points
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("recommended: ") for t in texts) and any("budget: FP32 − 0.5 pt" in t for t in texts)
    plt.close(fig)
    assert plot_png(REPORT)[:8] == b"\x89PNG\r\n\x1a\n"
