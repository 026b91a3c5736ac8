"""word2vec's SGD step against autograd through the public loss functions (the oracle)."""

import pytest
import torch

import torchnce
from torchnce.app.word2vec.corpus import load_corpus
from torchnce.app.word2vec.model import Word2Vec, Word2VecConfig, examples

PUBLIC = {"neg": torchnce.negative_sampling_loss, "nce": torchnce.nce_loss,
          "sampled_softmax": torchnce.sampled_softmax_loss}
LR = 0.5  # large, so that a wrong update is far outside float32 rounding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    words = ["the", "cat", "sees", "a", "dog", "and", "the", "dog", "sees", "the", "cat",
             "near", "a", "tree", "by", "the", "water"]
    gen = torch.Generator().manual_seed(0)
    lines = [" ".join(words[i] for i in torch.randint(len(words), (8,), generator=gen).tolist())
             for _ in range(40)]
    path = tmp_path_factory.mktemp("w2v") / "toy.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_corpus(path, 1)


def batch(model, corpus, kind):
    gen = torch.Generator().manual_seed(1)
    inputs, mask, labels = examples(kind, corpus.ids, corpus.lines, 2, gen)
    inputs, labels = inputs[:12], labels[:12]
    mask = None if mask is None else mask[:12]
    classes = model.negatives(labels, gen)
    return inputs, mask, labels, (classes.sampled, classes.true_count, classes.sampled_count)


def validated(model, labels, negatives):
    """The chunk's classes, as ``Word2Vec.negatives`` validates them, from given negatives."""
    return model.loss.classes(labels, negatives)


def autograd_step(model, inputs_ids, mask, labels, negatives, loss):
    """The updates that ``loss.backward()`` through the public function gives."""
    table = model.input_vectors.clone()
    rows = table[inputs_ids].requires_grad_()
    weights = model.output_vectors.clone().requires_grad_()
    x = rows
    if mask is not None:
        share = mask.float() / mask.sum(1, keepdim=True)
        x = (rows * share.unsqueeze(2)).sum(1)
    value = PUBLIC[loss](weights, None, labels.unsqueeze(1), x, model.config.num_sampled,
                         model.num_classes, sampled_values=negatives).sum()
    value.backward()
    grad_rows = rows.grad if mask is None else rows.grad[mask]
    ids = inputs_ids if mask is None else inputs_ids[mask]
    new_input = table.index_add(0, ids, grad_rows, alpha=-LR)
    return value.item(), new_input, (weights - LR * weights.grad).detach()


@pytest.mark.parametrize("loss", ["neg", "nce", "sampled_softmax"])
@pytest.mark.parametrize("kind", ["skipgram", "cbow"])
def test_step_applies_the_public_losses_gradients(corpus, loss, kind):
    model = Word2Vec(corpus, Word2VecConfig(model=kind, loss=loss, dim=6, num_sampled=3))
    model.output_vectors.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    inputs_ids, mask, labels, negatives = batch(model, corpus, kind)
    expected_loss, expected_in, expected_out = autograd_step(model, inputs_ids, mask, labels,
                                                             negatives, loss)
    got_loss = model.step(inputs_ids, mask, validated(model, labels, negatives), LR)
    assert got_loss == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(model.input_vectors, expected_in)
    torch.testing.assert_close(model.output_vectors, expected_out)


def test_negatives_are_the_samplers_draws_validated_once(corpus):
    model = Word2Vec(corpus, Word2VecConfig(dim=6, num_sampled=3), native=False)
    labels = corpus.ids[:40]
    classes = model.negatives(labels, torch.Generator().manual_seed(3))
    again = model.sampler.sample(labels.unsqueeze(1), 40 * 3, unique=False,
                                 generator=torch.Generator().manual_seed(3))
    assert torch.equal(classes.sampled, again.sampled_candidates.view(40, 3))
    torch.testing.assert_close(classes.sampled_count * 40,
                               again.sampled_expected_count.view(40, 3))
    torch.testing.assert_close(classes.true_count * 40, again.true_expected_count)
    batch = classes.rows(slice(8, 20))
    assert torch.equal(batch.labels, labels[8:20].unsqueeze(1))
    assert torch.equal(batch.sampled, classes.sampled[8:20])


def test_steps_of_changing_batch_sizes_reuse_the_workspace_correctly(corpus):
    model = Word2Vec(corpus, Word2VecConfig(dim=6, num_sampled=3))
    model.output_vectors.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    inputs_ids, _, labels, negatives = batch(model, corpus, "skipgram")
    for part in (slice(0, 12), slice(0, 5), slice(3, 12)):  # grow, shrink, grow again
        values = tuple(v[part] for v in negatives)
        expected = autograd_step(model, inputs_ids[part], None, labels[part], values, "neg")
        got_loss = model.step(inputs_ids[part], None,
                              validated(model, labels, negatives).rows(part), LR)
        assert got_loss == pytest.approx(expected[0], rel=1e-5)
        torch.testing.assert_close(model.input_vectors, expected[1])
        torch.testing.assert_close(model.output_vectors, expected[2])
