"""The CharRNN baseline: its vocabulary, that it learns, and that it samples strings."""

import math

import torch

from polydiff.baselines.char_rnn import CharRNN, CharVocabulary, sample_char_rnn, train_char_rnn


def test_vocabulary_round_trip(moses_sample):
    vocabulary = CharVocabulary.from_smiles(moses_sample)
    for smiles in moses_sample[:50]:
        ids = vocabulary.encode(smiles)
        assert ids[0] == 1 and ids[-1] == 2
        assert vocabulary.decode(ids[1:]) == smiles


def test_training_lowers_the_loss_and_sampling_returns_strings(moses_sample):
    torch.manual_seed(0)
    smiles = moses_sample[:64]
    vocabulary = CharVocabulary.from_smiles(smiles)
    model = CharRNN(len(vocabulary), hidden_size=64, num_layers=2)
    first = train_char_rnn(model, vocabulary, smiles, budget_seconds=60, batch_size=64, max_steps=1)
    # Untrained, the loss is about ln(vocabulary size); 150 steps on one batch must go far below.
    assert abs(first.final_loss - math.log(len(vocabulary))) < 0.3
    trained = train_char_rnn(model, vocabulary, smiles, budget_seconds=60, batch_size=64, max_steps=150, lr=1e-2)
    assert trained.steps == 150 and trained.final_loss < 1.5
    samples = sample_char_rnn(model, vocabulary, 50, max_length=80)
    assert len(samples) == 50 and all(len(s) <= 80 for s in samples)
    # A model that learned where lines end writes lines about as long as its data's.
    mean_length = sum(map(len, smiles)) / len(smiles)
    assert abs(sum(map(len, samples)) / len(samples) - mean_length) < 0.25 * mean_length
