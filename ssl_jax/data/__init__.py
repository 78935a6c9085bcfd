"""Host-side data: corpora (TFDS builders), tokenizers, pre-training examples, grain pipelines."""
