"""The network and the LoRA layer only: config, the decoder, its attention masks, LoRA and LoRA's fused kernels."""
