"""Test helpers for avrec models, importable by plug-in packages: the shared behaviour suite every
``Recommender`` passes and the structured data it runs on. Needs pytest (``pip install avrec[test]``).
"""

from avrec.testing.data import group_of, make_structured_dataset, new_items_frame, random_ndcg
from avrec.testing.suite import RecommenderSuite

__all__ = ["RecommenderSuite", "group_of", "make_structured_dataset", "new_items_frame", "random_ndcg"]
