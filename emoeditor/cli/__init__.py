"""Every entry point's argparse parser and main; train.py, test.py and scripts/ call these."""
