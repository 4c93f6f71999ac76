"""Figures of the mechanisms (diagrams, not plots of numbers), drawn from a config so the labels are computed.

``draw`` holds the primitives (boxes for tensors, weights, cached tensors and operations; arrows with
labels); each chapter's diagram lives in its own module here and takes a :class:`DeepseekV3Config` (or the
numbers it needs), so the tiny and the V3 sizes both render.
"""
