"""The tools: what you do with a model -- ``data`` (corpus, tokenizer, batches), ``train`` (the training
loop with bias balancing), ``generate`` (decoding on the latent cache), ``hf_compat`` (HF-format checkpoint
export/import). Tools import ``model``, never ``course``.
"""
