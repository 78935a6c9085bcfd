"""Hugging Face-format checkpoints (BERT, GPT-2) in and out (hf_bert.py, hf_gpt2.py, their
shared tensor rules and safetensors I/O in hf_format.py), and one loader for any pre-trained
model (pretrained.load_pretrained)."""
