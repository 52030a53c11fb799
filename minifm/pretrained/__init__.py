"""Real pretrained models in and out: Hugging Face directories and GGUF files, read and written."""
