"""Detect objects in images with the model's own preprocessing, on any backend."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from fastdet_cli.commands import options

def infer(
    images: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: str = options.Model,
    backend: str = options.Backend,
    threads: int = options.Threads,
    device: str = options.Device,
    threshold: float = typer.Option(None, "--threshold", "-t", help="Score threshold (default: the deploy config's draw_threshold)."),
    json_out: Path = typer.Option(None, "--json", help="Write detections of all images to this JSON file."),
    save_dir: Path = typer.Option(None, "--save-dir", help="Write images with boxes drawn into this folder."),
) -> int:
    """Detect objects in images: a table per image; JSON and drawn images on request."""
    from rich.markup import escape

    from fastdet_cli.ui import Table, make_console

    from fastdet_cli.det.draw import draw, records
    from fastdet_cli.artifacts import detector
    from fastdet_cli.det.preprocess import IMAGE_SUFFIXES, expand_inputs, read_image
    from fastdet_cli.errors import FastdetError
    from fastdet_cli.io import check_output_dir, check_output_file, write_bytes_atomic, write_json_atomic

    console, err = make_console(), make_console(stderr=True)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise FastdetError(f"--threshold must be a score between 0 and 1, got {threshold:g}")
    check_output_file(json_out, "--json")
    check_output_dir(save_dir, "--save-dir")
    files = expand_inputs(images)
    if not files:
        raise FastdetError("no images given (folders had no image files)")
    results, failures = [], 0
    with detector(model, backend, options.runner_options(threads, device)) as det:
        thr = det.deploy.draw_threshold if threshold is None else threshold
        in_graph = det.graph_nms_score_threshold()
        if in_graph is None and thr < det.nms.score_threshold:  # fastdet runs the NMS: keep what was asked for
            err.print(f"note: NMS score threshold lowered from the model's {det.nms.score_threshold:g} to {thr:g}",
                      highlight=False)
            det.nms = dataclasses.replace(det.nms, score_threshold=thr)
        elif in_graph is not None and thr < in_graph:
            err.print(f"note: this model's in-graph NMS drops boxes below {in_graph:g}; --threshold {thr:g} cannot "
                      "bring them back (export it with the NMS cut to lower it)", highlight=False)
        labels = det.deploy.label_list
        if model == "default":
            err.print(f"note: the embedded model is trained on generated shapes only ({', '.join(labels)}); "
                      "on real photos its detections mean nothing — pass your own model with --model", highlight=False)
        for path in files:
            try:
                bgr = read_image(path)
            except FastdetError as e:
                err.print(f"[red]skipped:[/] {escape(str(e))}", highlight=False)
                results.append({"image": str(path), "error": str(e), "detections": []})  # recorded, not dropped
                failures += 1
                continue
            found = det(bgr).above(thr)
            recs = records(found, labels)
            results.append({"image": str(path), "width": bgr.shape[1], "height": bgr.shape[0], "detections": recs})
            noun = "object" if len(recs) == 1 else "objects"
            table = Table(title=f"{path.name}: {len(recs)} {noun} (score ≥ {thr:g}, {backend}, "
                                f"{det.times.infer * 1000:.1f} ms runtime)", title_justify="left")
            for col in ("label", "score", "x1", "y1", "x2", "y2"):
                table.add_column(col, justify="left" if col == "label" else "right")
            for r in recs:
                table.add_row(r["label"], f"{r['score']:.3f}", *(f"{v:.1f}" for v in r["bbox"]))
            console.print(table)
            if save_dir is not None:
                import cv2

                ok, buf = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ".jpg",
                                       draw(bgr, found, labels))
                write_bytes_atomic(save_dir / path.name, buf.tobytes())
    for note in det.notes:
        err.print(f"note: {escape(note)}", highlight=False)
    if json_out is not None:
        write_json_atomic(json_out, {"model": model if model == "default" else str(det.source.path),
                                     "backend": backend, "threshold": thr,
                                     "images": results})
    if failures:
        err.print(f"[bold red]error:[/] {failures} of {len(files)} inputs could not be read", highlight=False)
        return 2
    return 0
