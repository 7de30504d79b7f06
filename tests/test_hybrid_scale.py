"""The hybrid's size plan is decided by cost (catalogue scores, softmax logits), not by item count alone:
small catalogues keep exactly the full plan, a mid-size catalogue with many users gets the bounded one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from avrec.models.hybrid_config import HybridConfig
from avrec.models.hybrid_scale import NEGATIVES, SCORE_BUDGET, SOFTMAX_BUDGET, VALID_USERS, plan_costs, plan_for_size
from avrec.models.scale import Size

#: (users, items, interactions) of the real datasets the accuracy benchmarks use
SMALL = {"ml-latest-small": (610, 9_724, 100_836), "lastfm-2k": (1_892, 17_632, 92_834),
         "movielens-2k": (2_113, 10_197, 855_598), "synthetic 10k x 1M": (50_000, 10_000, 1_000_000)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_catalogues_keep_todays_plan(name):
    """Only the two auto settings resolve (full softmax, every validation user); nothing else moves."""
    config = HybridConfig()
    planned, why = plan_for_size(config, Size(*SMALL[name]))
    assert why == {}
    assert planned == replace(config, tower_negatives=0, valid_users=0)


def test_a_mid_size_catalogue_with_many_users_gets_the_bounded_plan():
    """100k items × 250k users is under scale_items but its full path costs 1.2e12 scores: bounded."""
    config = HybridConfig()
    size = Size(250_000, 100_000, 5_000_000)
    assert size.n_items < config.scale_items and plan_costs(config, size)["scores"] > 10 * SCORE_BUDGET
    planned, why = plan_for_size(config, size)
    assert planned.tower_negatives == NEGATIVES and planned.valid_users == VALID_USERS
    assert planned.component_tuning is False and planned.ann_kind == "ivf"
    assert "catalogue scores" in why["validation"] and "1.2e+12" in why["validation"]


def test_each_part_follows_its_own_cost():
    """Many users on a 30k catalogue: validation is sampled, but the softmax (1.5e9 logits) stays full."""
    config = HybridConfig()
    size = Size(200_000, 30_000, 4_000_000)
    cost = plan_costs(config, size)
    assert cost["logits"] < SOFTMAX_BUDGET < SCORE_BUDGET < cost["scores"]
    planned, why = plan_for_size(config, size)
    assert planned.tower_negatives == 0 and "towers" not in why
    assert planned.valid_users == VALID_USERS and planned.component_tuning is False


def test_costs_grow_with_the_settings_that_drive_them():
    config = HybridConfig()
    size = Size(1_892, 17_632, 92_834)
    base = plan_costs(config, size)
    assert plan_costs(replace(config, max_steps=4000), size)["logits"] == pytest.approx(10 * base["logits"])
    assert plan_costs(replace(config, component_tuning=False), size)["scores"] < base["scores"]
    # more steps make lastfm's full softmax too costly: the towers sample, validation stays full
    planned, why = plan_for_size(replace(config, max_steps=4000), size)
    assert planned.tower_negatives == NEGATIVES and planned.valid_users == 0 and "softmax logits" in why["towers"]


def test_explicit_settings_and_scale_items_still_win():
    config = replace(HybridConfig(), tower_negatives=0, valid_users=0)
    planned, _ = plan_for_size(config, Size(250_000, 100_000, 5_000_000))
    assert planned.tower_negatives == 0 and planned.valid_users == 0  # the user's choice is kept
    planned, why = plan_for_size(HybridConfig(), Size(1_000_000, 1_000_000, 20_000_000))
    assert planned.valid_users == VALID_USERS and "scale_items=200,000" in why["validation"]
