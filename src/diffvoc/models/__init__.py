"""Networks: the DiffWave denoiser ε_θ and TDPM's mel discriminator."""
