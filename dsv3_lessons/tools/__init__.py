"""The tools: what you do with a model -- ``data`` (corpus, tokenizer, batches), ``train`` (the training loop
with bias balancing), ``progress`` (progress bars), ``generate`` (decoding on the latent cache),
``speculative`` (speculative decoding with the MTP module as the draft), ``hf_compat`` (HF-format checkpoint
export/import, FP8 included), ``expert_parallel`` (node-limited expert dispatch on ``torch.distributed``),
``distributed_train`` (data + expert parallel training under ``torchrun``).
Tools import ``model``, never ``course``.
"""
