"""The diffusion maths: schedule, priors, losses, samplers, InferGrad and truncation (TDPM)."""
