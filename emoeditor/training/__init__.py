"""EmoEditor training (setup / train_step / export), checkpoints, the predictor's training."""
