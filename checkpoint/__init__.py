"""The files a run writes: the self-describing .pth format, LoRA adapter files and the out/ layout."""
