"""Monotonic alignment search (Glow-TTS, Kim et al. NeurIPS 2020, §3.2 and Algorithm 1).

Given the log-likelihood L[i, j] of mel frame j under text token i, MAS finds the monotonic,
surjective alignment A (every token gets ≥ 1 consecutive frames, frames in order, the first frame on
the first token, the last frame on the last token) maximising Σ_j L[A(j), j] by dynamic programming:

    Q[i, j] = max(Q[i − 1, j − 1], Q[i, j − 1]) + L[i, j],   Q[0, 0] = L[0, 0]

then backtracks from (N − 1, T − 1). Here it runs on a batch at once (vectorised over items and
tokens, a loop over frames) with no gradient; Glow-TTS/Grad-TTS train the encoder on the aligned
log-likelihood, the alignment itself is a constant.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def monotonic_alignment(log_lik: torch.Tensor, token_lengths: torch.Tensor,
                        frame_lengths: torch.Tensor) -> torch.Tensor:
    """The most likely monotonic alignment per item.

    Args:
        log_lik: ``[B, N, T]`` log-likelihood of frame j under token i.
        token_lengths: ``[B]`` real tokens per item (the rest is padding).
        frame_lengths: ``[B]`` real frames per item; must be ≥ the token length.
    Returns:
        ``[B, N, T]`` 0/1 float alignment (zero on padding).
    """
    B, N, T = log_lik.shape
    if bool((frame_lengths < token_lengths).any()):
        raise ValueError("monotonic alignment needs at least as many frames as tokens")
    neg = torch.finfo(torch.float32).min / 4
    L = log_lik.detach().float().cpu()
    tok = token_lengths.cpu()
    frm = frame_lengths.cpu()
    ar_n = torch.arange(N)
    valid_tok = ar_n.unsqueeze(0) < tok.unsqueeze(1)  # [B, N]
    Q = torch.full((B, N, T), neg)
    from_diag = torch.zeros((B, N, T), dtype=torch.bool)  # True: came from (i − 1, j − 1)
    Q[:, 0, 0] = L[:, 0, 0]
    for j in range(1, T):
        stay = Q[:, :, j - 1]
        diag = torch.cat([torch.full((B, 1), neg), Q[:, :-1, j - 1]], dim=1)
        take = diag > stay
        best = torch.where(take, diag, stay)
        # token i can hold frame j only if i ≤ j (each earlier token has a frame) — the neg init does that
        q = best + L[:, :, j]
        q = torch.where(valid_tok & (best > neg / 2), q, torch.full_like(q, neg))
        Q[:, :, j] = q
        from_diag[:, :, j] = take
    diag_np = from_diag.numpy()
    path = np.zeros((B, N, T), dtype=np.float32)
    for b in range(B):
        i = int(tok[b]) - 1
        for j in range(int(frm[b]) - 1, -1, -1):
            path[b, i, j] = 1.0
            if j > 0 and i > 0 and (diag_np[b, i, j] or i == j):
                i -= 1
    return torch.from_numpy(path).to(log_lik.device)


def durations_from_alignment(path: torch.Tensor) -> torch.Tensor:
    """Frames per token ``[B, N]`` (long) of a 0/1 alignment ``[B, N, T]``."""
    return path.sum(-1).round().long()


def gaussian_log_likelihood(mel: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """log N(y_j; μ_i, I) for every token i and frame j (Glow-TTS eq. 3 with unit variance, up to the
    constant): ``mel`` ``[B, n_mels, T]``, ``mu`` ``[B, n_mels, N]`` → ``[B, N, T]``."""
    # −½‖y − μ‖² = −½‖y‖² + μᵀy − ½‖μ‖²
    yy = mel.pow(2).sum(1, keepdim=True)  # [B, 1, T]
    mm = mu.pow(2).sum(1).unsqueeze(-1)  # [B, N, 1]
    return torch.bmm(mu.transpose(1, 2), mel) - 0.5 * yy - 0.5 * mm
