"""Running a model: loading for inference, precisions, sampling, the batched decoder, generation, fitting a prompt."""
