"""Cross-sensor adaptation (LoveCS): scene, config, self-training, pseudo-labels, verdict."""
