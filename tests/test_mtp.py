"""MTP (V3 §2.2): label alignment with packed documents, loss normalisation, concat order, shared
parameters, the sequential chain. Oracles: explicit loops over a token stream, closed-form CE, and
recomputation from the module's own weights."""
import pytest
import torch
import torch.nn.functional as F

from dsv3_lessons.model import DeepSeekV3, tiny
from dsv3_lessons.model.mtp import IGNORE_INDEX, mtp_cross_entropy, mtp_inputs_and_targets, mtp_labels

V = 11


def build(seed=0, **cfg):
    torch.manual_seed(seed)
    return DeepSeekV3(tiny(vocab_size=V, **cfg), aux_loss_alpha=0.0).eval()


def packed(doc_lengths, seed=0):
    """A packed window of documents: (ids [1, T], targets [1, T], doc_ids [1, T], stream, docs)."""
    g = torch.Generator().manual_seed(seed)
    stream = torch.cat([torch.randint(0, V, (n,), generator=g) for n in doc_lengths])
    docs = torch.cat([torch.full((n,), i) for i, n in enumerate(doc_lengths)])
    ids, nxt = stream[:-1], stream[1:]
    targets = torch.where(docs[1:] == docs[:-1], nxt, torch.tensor(IGNORE_INDEX))   # the packer's rule
    return ids[None], targets[None], docs[:-1][None], stream, docs


def oracle_labels(stream, docs, depth):
    """Loop oracle: position i's depth-k label is t_{i+k+1} if t_i … t_{i+k+1} share a document."""
    T = len(stream) - 1
    out = []
    for i in range(T - depth):
        j = i + depth + 1
        out.append(int(stream[j]) if docs[j] == docs[i] else IGNORE_INDEX)
    return torch.tensor(out)[None]


@pytest.mark.parametrize("depth", [1, 2])
def test_labels_for_packed_documents_never_cross_a_boundary(depth):
    ids, targets, doc_ids, stream, docs = packed([5, 3, 6])          # two boundaries inside the window
    labels = mtp_labels(targets, depth, doc_ids)
    assert labels.shape == (1, ids.shape[1] - depth)
    assert torch.equal(labels, oracle_labels(stream, docs, depth))
    # without doc ids only the packer's −100 helps: labels from the end of a document into the next leak
    unaware = mtp_labels(targets, depth)
    assert int((unaware != labels).sum()) == {1: 2, 2: 4}[depth]
    assert labels[0, 4] == IGNORE_INDEX != unaware[0, 4]              # t_4 (doc 0) -> t_{4+k+1} (doc 1)


def test_labels_respect_the_ignore_index_and_drop_the_tail():
    targets = torch.arange(10)[None].clone()
    targets[0, 6] = IGNORE_INDEX
    for depth in (1, 2):
        labels = mtp_labels(targets, depth)
        assert labels.shape == (1, 10 - depth)                        # the last `depth` positions: no label
        assert labels[0].tolist() == [t if t != 6 else IGNORE_INDEX for t in range(depth, 10)]
    ids, lab = mtp_inputs_and_targets(torch.arange(10)[None], targets, 2)
    assert ids[0].tolist() == list(range(2, 10))                      # embedded: t_{i+2}
    with pytest.raises(ValueError, match="depth"):
        mtp_labels(targets, 10)
    with pytest.raises(ValueError, match="doc_ids"):
        mtp_labels(targets, 1, torch.zeros(1, 9, dtype=torch.long))


def test_forward_uses_doc_ids_for_the_mtp_loss():
    model = build()
    ids, targets, doc_ids, stream, docs = packed([7, 4, 9], seed=3)
    with torch.no_grad():
        out = model(ids, targets, doc_ids=doc_ids)
        unaware = model(ids, targets)
    want = F.cross_entropy(out.mtp_logits[0][0], oracle_labels(stream, docs, 1)[0], ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.mtp_loss, want)
    assert abs(unaware.mtp_loss - out.mtp_loss) > 1e-4                  # the boundary labels did count before


def test_loss_is_the_mean_over_the_depths_own_labels():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, V, generator=g)
    labels = torch.randint(0, V, (2, 6), generator=g)
    labels[0, :4] = IGNORE_INDEX                                     # 8 of 12 labels left
    per_token = [-torch.log_softmax(logits[b, i], -1)[labels[b, i]]
                 for b in range(2) for i in range(6) if labels[b, i] != IGNORE_INDEX]
    expect = sum(per_token) / len(per_token)                         # divide by this depth's own count
    torch.testing.assert_close(mtp_cross_entropy(logits, labels), expect)
    main_count = 2 * 7                                               # what a main-loss denominator would be
    assert abs(float(sum(per_token) / main_count) - float(expect)) > 0.1


def test_all_masked_depth_gives_zero_with_finite_gradients():
    model = build(1).train()
    ids = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(5))
    targets = torch.full_like(ids, IGNORE_INDEX)
    targets[:, 0] = 3                                                # only position 0 has a main label
    out = model(ids, targets)
    assert out.mtp_loss.item() == 0.0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.mtp.parameters())
    # the same when a packed window's doc ids mask everything of depth 1
    targets2 = ids.roll(-1, 1)
    doc_ids = torch.arange(8).expand(2, 8)                           # every token its own document
    model.zero_grad()
    out2 = model(ids, targets2, doc_ids=doc_ids)
    assert out2.mtp_loss.item() == 0.0
    out2.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_concat_order_is_embedding_first():
    model = build(2)
    module = model.mtp[0]
    g = torch.Generator().manual_seed(6)
    h, e = torch.randn(2, 1, 5, model.cfg.hidden_size, generator=g)
    seen = {}
    handle = module.eh_proj.register_forward_pre_hook(lambda mod, inp: seen.update(x=inp[0]))   # returns None
    with torch.no_grad():
        module(h, e)
    handle.remove()
    torch.testing.assert_close(seen["x"], torch.cat([module.enorm(e), module.hnorm(h)], -1))
    paper_order = torch.cat([module.hnorm(h), module.enorm(e)], -1)
    assert (seen["x"] - paper_order).abs().max() > 1e-3


def test_embedding_and_head_are_the_main_models():
    model = build(3)
    d, v = model.cfg.hidden_size, model.cfg.vocab_size
    assert not any(p.shape in ((v, d), (d, v)) for p in model.mtp.parameters())
    ids = torch.randint(0, V, (1, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = model(ids, compute_mtp=True)
        module = model.mtp[0]
        h1 = module(out.hidden[:, :-1], model.embed_tokens(ids[:, 1:]))
        torch.testing.assert_close(out.mtp_logits[0], module.shared_head.norm(h1) @ model.lm_head.weight.T)
        model.lm_head.weight.mul_(2.0)                               # one tensor: the MTP head changes too
        torch.testing.assert_close(model(ids, compute_mtp=True).mtp_logits[0], 2 * out.mtp_logits[0])


def test_depths_form_a_sequential_chain():
    model = build(4, num_nextn_predict_layers=2)
    ids = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = model(ids, compute_mtp=True)
        assert [lg.shape[1] for lg in out.mtp_logits] == [9, 8]
        h1 = model.mtp[0](out.hidden[:, :9], model.embed_tokens(ids[:, 1:]))
        h2 = model.mtp[1](h1[:, :8], model.embed_tokens(ids[:, 2:]))      # depth 2 reads depth 1's output
        torch.testing.assert_close(out.mtp_logits[1], model.lm_head(model.mtp[1].shared_head.norm(h2)))
        model.mtp[0].eh_proj.weight.mul_(1.5)                        # change depth 1 only
        after = model(ids, compute_mtp=True)
    assert (after.mtp_logits[1] - out.mtp_logits[1]).abs().max() > 1e-4   # depth 2 moved: not parallel heads
