"""No regression from the media code path: a catalogue without media columns or vector files gets exactly
the item features (and, for the hybrid, the fitted model) it had before issue 17's modalities existed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from avrec.testing import make_structured_dataset

from avrec.data.dataset import TEXT_FIELDS
from avrec.data.documents import DocumentConfig, build_documents
from avrec.models.hybrid_config import HybridConfig
from avrec.models.hybrid_features import ItemFeaturizer
from avrec.models.registry import create_model


def _features(items: pd.DataFrame, media: bool):
    """Item features with the media path on (``auto``: look for vector files and media columns) or off."""
    config = HybridConfig(use_lm=False)
    config.modalities = ["auto"] if media else ["none"]  # type: ignore[attr-defined]  # the featurizer's hook
    featurizer = ItemFeaturizer(config)
    return featurizer, featurizer.fit(items)


def _same_sparse(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))


def _check_identical(items: pd.DataFrame) -> None:
    on_f, on = _features(items, media=True)
    off_f, off = _features(items, media=False)
    assert on_f.modalities.names == [] and on.groups == () == off.groups
    assert _same_sparse(on.sparse, off.sparse)
    assert on_f.meta()["modalities"] == off_f.meta()["modalities"]
    # heard_tags joined the default text fields; absent, the documents are those of the old field list
    old = [f for f in TEXT_FIELDS if f != "heard_tags"]
    assert build_documents(items) == build_documents(items, DocumentConfig(fields=old))


def test_structured_catalogue_features_identical_with_and_without_media_path() -> None:
    _check_identical(make_structured_dataset().items)


def test_ml_latest_small_features_identical_with_and_without_media_path(ml_small) -> None:
    _check_identical(ml_small.items)


def test_hybrid_fit_identical_with_and_without_media_path() -> None:
    """Same data, same seed: the media path draws no random numbers and adds no feature, so scores match bit for bit."""
    ds = make_structured_dataset()
    scores = []
    for media in (True, False):
        model = create_model("hybrid", use_lm=False, max_steps=30, eval_every=10, dim=8, hidden=8, batch_users=8,
                             seed=3)
        model.config.modalities = ["auto"] if media else ["none"]
        model.fit(ds)
        scores.append(model.score_users(np.arange(5), None))
    np.testing.assert_array_equal(scores[0], scores[1])
