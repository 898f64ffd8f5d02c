"""COCO mAP of a detector on a dataset (faster-coco-eval)."""
