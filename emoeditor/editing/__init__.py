"""One edit (the diffusion pipeline), the critic's accept rules, the batched iterative loop, model loading."""
