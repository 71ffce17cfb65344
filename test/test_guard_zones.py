"""The guard's zone outlines for rviz (core/guard_report.py): points at a given gap from the footprint. No ROS."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vln_ros.core.guard_footprint import Footprint, FootprintParams
from vln_ros.core.guard_report import points_at_gap, zone_outline

RECTANGLE = FootprintParams(polygon='0.4, 0.2, -0.4, 0.2, -0.4, -0.2, 0.4, -0.2')


@pytest.mark.parametrize('gap_m', [0.0, 0.05, 0.3])
def test_every_outline_point_lies_at_its_gap_from_a_circle_or_a_polygon_footprint(gap_m):
    for params in (FootprintParams(radius_m=0.3), RECTANGLE):
        footprint = Footprint(params)
        outline = zone_outline(footprint, gap_m)
        assert outline.shape == (73, 2) and np.allclose(outline[0], outline[-1])   # closed
        if gap_m > 0.0:
            assert np.allclose(footprint.distance(outline), gap_m, atol=1e-6)
        else:   # the footprint's own outline: on its edge (distance 0) and no further out than its corners
            assert np.allclose(footprint.distance(outline), 0.0, atol=1e-6)
            assert np.all(np.hypot(outline[:, 0], outline[:, 1]) <= footprint.circumradius_m + 1e-6)
            assert np.all(np.hypot(outline[:, 0], outline[:, 1]) >= footprint.inradius_m - 1e-6)


def test_the_nearest_obstacle_is_drawn_along_its_bearing_at_its_gap():
    footprint = Footprint(RECTANGLE)
    (x, y), = points_at_gap(footprint, 0.1, np.array([0.0]))
    assert (x, y) == pytest.approx((0.5, 0.0))
    (x, y), = points_at_gap(footprint, 0.1, np.array([math.pi / 2]))
    assert (x, y) == pytest.approx((0.0, 0.3))


@pytest.mark.parametrize('gap_m', [-0.1, math.inf, math.nan])
def test_a_gap_that_is_not_a_distance_is_refused_with_its_value(gap_m):
    with pytest.raises(ValueError, match=f'gap_m must be finite and >= 0, got {gap_m}'):
        points_at_gap(Footprint(RECTANGLE), gap_m, np.array([0.0]))
