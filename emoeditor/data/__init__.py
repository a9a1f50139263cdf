"""EmoPair and EmoSet readers, the latent cache, toy data sets."""
