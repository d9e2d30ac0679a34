"""Training: the loop (EMA, DDP, resume, validation) and the fast CPU training engine."""
