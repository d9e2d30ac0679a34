"""Inference: :class:`Vocoder`, the fast engine, class-conditional generation, ONNX export."""
