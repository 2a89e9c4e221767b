"""Human names: every stored metric has a label with its unit and an explanation; figures
and objects are named by what they are."""

import numpy as np
import pytest

from spfluo.objects import PSFModel, VolumeComparison
from spfluo.viewers.labels import (
    METRICS,
    figure_label,
    format_metric,
    metric_label,
    object_name,
)


def test_every_comparison_metric_has_a_label_a_unit_and_an_explanation():
    for key in VolumeComparison.FLOAT_METRICS + VolumeComparison.INTEGER_METRICS:
        label = METRICS[key]
        assert label.label != key and len(label.explanation.split()) >= 5, key
    for key in VolumeComparison.FLOAT_METRICS:  # numbers with a unit say it
        assert "(" in METRICS[key].label and METRICS[key].label.endswith(")"), key
    angle = METRICS["registration_angle_deg"]
    assert "Not a quality measure" in angle.explanation and "180" in angle.explanation
    for key, words in (("ssim", "1 is identical"), ("fsc_resolution_0143_um", "0.143"),
                       ("pose_error_median_deg", "true one")):
        assert words in METRICS[key].explanation
    assert metric_label("unknown_key").label == "unknown_key"  # shown as it is


def test_values_are_formatted_as_their_metric():
    assert format_metric("ssim", 0.91234) == "0.912"
    assert format_metric("registration_angle_deg", 179.7123) == "179.7"
    assert format_metric("n_matched_particles", 30.0) == "30"
    assert format_metric("fsc_resolution_0143_um", None) == "-"


def test_figures_and_objects_are_named(tmp_path):
    assert figure_label("half_map_fsc") == "half-map FSC"
    assert figure_label("picks_field_0") == "picks in field_0"
    assert figure_label("conical_fsc_1") == "conical FSC 1"
    assert figure_label("something_new") == "something new"
    from spfluo.io import write_volume
    from spfluo.viewers.object_figures import image_figures

    path = tmp_path / "psf.tif"
    write_volume(path, np.ones((5, 5, 5), np.float32), (0.1,) * 3)
    psf = PSFModel(filename=str(path), voxelSize=(0.1,) * 3, shape=(1, 5, 5, 5), imageId="psf")
    assert object_name(psf) == "PSF psf"
    ((name, fig),) = image_figures(psf)
    assert fig.get_suptitle() == "PSF psf: central slices and maximum projections (µm)"
    assert "PSFModel" not in fig.get_suptitle()
    with pytest.raises(KeyError):
        METRICS["no_such_metric"]
