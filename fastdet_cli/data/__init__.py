"""Datasets: the generated default dataset and COCO-format folders."""
