"""The networks and their weights: emotion encoder, latents, components, the predictor P, weight loading, the
official release, tiny presets."""
