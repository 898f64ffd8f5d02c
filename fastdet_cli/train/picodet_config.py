"""Self-contained ppdet configs for the PicoDet family (the paddledet wheel ships no config files).

Architecture hyperparameters follow PaddleDetection's PicoDet-S (LCNet + LCPAN + PicoHeadV2); `scale` and
`channels` shrink it. Used by tools/train_default.py (the embedded default model) and by the tests (tiny
random-weight models in each export kind).
"""
from __future__ import annotations

from pathlib import Path

CONFIG = """
use_gpu: false
use_xpu: false
log_iter: 10
save_dir: {ckpt_dir}
snapshot_epoch: 1
print_flops: false
weights: ''
architecture: PicoDet
num_classes: {num_classes}
metric: COCO
epoch: {epochs}
find_unused_parameters: false
use_ema: true
ema_decay: 0.9998
export:
  post_process: {post_process}
  nms: {nms}
  benchmark: false
  fuse_conv_bn: false

PicoDet:
  backbone: LCNet
  neck: LCPAN
  head: PicoHeadV2

LCNet:
  scale: {scale}
  feature_maps: [3, 4, 5]

LCPAN:
  out_channels: {channels}
  use_depthwise: true
  num_features: 4

PicoHeadV2:
  conv_feat:
    name: PicoFeat
    feat_in: {channels}
    feat_out: {channels}
    num_convs: 2
    num_fpn_stride: 4
    norm_type: bn
    share_cls_reg: true
    use_se: true
  fpn_stride: [8, 16, 32, 64]
  feat_in_chan: {channels}
  prior_prob: {prior_prob}
  reg_max: 7
  cell_offset: 0.5
  grid_cell_scale: 5.0
  static_assigner_epoch: 3
  use_align_head: true
  static_assigner:
    name: ATSSAssigner
    topk: 9
    force_gt_matching: false
  assigner:
    name: TaskAlignedAssigner
    topk: 13
    alpha: 1.0
    beta: 6.0
  loss_class:
    name: VarifocalLoss
    use_sigmoid: false
    iou_weighted: true
    loss_weight: 1.0
  loss_dfl:
    name: DistributionFocalLoss
    loss_weight: 0.5
  loss_bbox:
    name: GIoULoss
    loss_weight: 2.5
  nms:
    name: MultiClassNMS
    nms_top_k: 1000
    keep_top_k: 100
    score_threshold: 0.025
    nms_threshold: 0.6

LearningRate:
  base_lr: {lr}
  schedulers:
  - name: CosineDecay
    max_epochs: {epochs}
  - name: LinearWarmup
    start_factor: 0.1
    steps: 100

OptimizerBuilder:
  optimizer:
    momentum: 0.9
    type: Momentum
  regularizer:
    factor: 0.00004
    type: L2

TrainDataset:
  name: COCODataSet
  image_dir: train
  anno_path: annotations/instances_train.json
  dataset_dir: {data_dir}
  data_fields: ['image', 'gt_bbox', 'gt_class', 'is_crowd']

EvalDataset:
  name: COCODataSet
  image_dir: val
  anno_path: annotations/instances_val.json
  dataset_dir: {data_dir}

TestDataset:
  name: ImageFolder
  anno_path: annotations/instances_val.json
  dataset_dir: {data_dir}

worker_num: 0
TrainReader:
  sample_transforms:
  - Decode: {{}}
  - RandomFlip: {{prob: 0.5}}
  batch_transforms:
  - BatchRandomResize: {{target_size: [{size}, {size}], random_size: false, random_interp: false, keep_ratio: false}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
  - PadGT: {{}}
  batch_size: {batch}
  shuffle: true
  drop_last: true

EvalReader:
  sample_transforms:
  - Decode: {{}}
  - Resize: {{interp: 2, target_size: [{size}, {size}], keep_ratio: false}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
  batch_transforms:
  - PadBatch: {{pad_to_stride: 32}}
  batch_size: 8
  shuffle: false

TestReader:
  inputs_def:
    image_shape: [1, 3, {size}, {size}]
  sample_transforms:
  - Decode: {{}}
  - Resize: {{interp: 2, target_size: [{size}, {size}], keep_ratio: false}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
  batch_size: 1
"""


def write_picodet_config(path: Path, data_dir: Path, num_classes: int, *, ckpt_dir: Path | None = None,
                         epochs: int = 10, batch: int = 32, lr: float = 0.12, size: int = 192, scale: float = 0.5,
                         channels: int = 64, prior_prob: float = 0.01, post_process: bool = True,
                         nms: bool = True) -> Path:
    """Write a ppdet config; the file's stem becomes the export folder name ppdet uses."""
    path.write_text(CONFIG.format(ckpt_dir=ckpt_dir or path.parent / "ckpt", num_classes=num_classes,
                                  epochs=epochs, lr=lr, data_dir=data_dir, batch=batch, size=size, scale=scale,
                                  channels=channels, prior_prob=prior_prob, post_process=str(post_process).lower(),
                                  nms=str(nms).lower()))
    return path
