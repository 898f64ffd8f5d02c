"""The detection pipeline: deploy config, preprocessing, post-processing, drawing."""
