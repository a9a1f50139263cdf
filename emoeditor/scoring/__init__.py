"""Metrics, Grad-CAM and SSIM: used by the critic, the evaluation and curation alike."""
