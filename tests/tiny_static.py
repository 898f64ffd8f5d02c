"""A tiny detector built in code with Paddle's static API (no ppdet): 32×32 input, two convolutions, outputs
boxes [1, 64, 4] and scores [1, 2, 64] (the "NMS removed" export kind), saved as a Paddle inference model with
a deploy config. Seconds to build and to train with ACT: for tests of the compress plumbing (distributed QAT)."""
from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = {"mode": "paddle", "draw_threshold": 0.3, "metric": "COCO", "use_dynamic_shape": False, "arch": "GFL",
          "min_subgraph_size": 3,
          "Preprocess": [{"type": "Resize", "target_size": [32, 32], "keep_ratio": False, "interp": 2},
                         {"type": "NormalizeImage", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "is_scale": True},
                         {"type": "Permute"}],
          "label_list": ["circle", "rectangle"],
          "NMS": {"keep_top_k": 20, "nms_threshold": 0.5, "nms_top_k": 100, "score_threshold": 0.05}}


def build_tiny_static(out: Path, seed: int = 0) -> Path:
    import paddle

    from fastdet_cli.lazy import import_paddle

    import_paddle()
    paddle.enable_static()
    paddle.seed(seed)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data("image", [1, 3, 32, 32], "float32")
        scale = paddle.static.data("scale_factor", [1, 2], "float32")
        x = paddle.static.nn.conv2d(image, 8, 3, stride=2, padding=1, act="relu")
        x = paddle.static.nn.conv2d(x, 8, 3, stride=2, padding=1, act="relu")
        x = paddle.static.nn.conv2d(x, 6, 1)  # [1, 4 + 2, 8, 8]
        x = paddle.reshape(x, [1, 6, 64])
        centre = paddle.nn.functional.sigmoid(x[:, 0:2, :]) * 32.0
        half = paddle.nn.functional.sigmoid(x[:, 2:4, :]) * 8.0 + 1.0
        boxes = paddle.transpose(paddle.concat([centre - half, centre + half], axis=1), [0, 2, 1])
        sf = paddle.concat([scale[:, 1:2], scale[:, 0:1], scale[:, 1:2], scale[:, 0:1]], axis=1)
        boxes = boxes / paddle.unsqueeze(sf, 1)
        scores = paddle.nn.functional.sigmoid(x[:, 4:6, :])
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    out.mkdir(parents=True, exist_ok=True)
    paddle.static.save_inference_model(str(out / "model"), [image, scale], [boxes, scores], exe, program=main)
    (out / "infer_cfg.yml").write_text(yaml.safe_dump(DEPLOY, sort_keys=False))
    paddle.disable_static()
    return out


if __name__ == "__main__":
    import sys

    build_tiny_static(Path(sys.argv[1]))
