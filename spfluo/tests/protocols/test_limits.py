"""Every count parameter of every protocol has a maximum, refused before anything runs;
GPU lists are checked the same way."""

import re

import pytest
import pyworkflow.protocol.params as params

from spfluo.algorithms import limits
from spfluo.protocols.base import IntRange
from spfluo.protocols.protocol_refine import parse_schedule
from spfluo.tests._projects import assert_rejected
from spfluo.workflow import protocol_classes

_MAXIMA = {getattr(limits, name) for name in limits.__all__ if name.startswith("MAX_")}


def _count_params():
    for cls_name, cls in sorted(protocol_classes().items()):
        for name, param in cls().getDefinition().iterParams():
            if isinstance(param, params.IntParam) and not isinstance(param, params.EnumParam):
                yield cls_name, name, param


def test_every_count_parameter_has_a_documented_maximum():
    found = list(_count_params())
    assert len(found) > 30
    for cls_name, name, param in found:
        bounds = [v for v in param.validators if isinstance(v, IntRange)]
        assert len(bounds) == 1, f"{cls_name}.{name} has no maximum"
        top = bounds[0].maximum
        assert top in _MAXIMA or top + 1 in _MAXIMA or top == 2, f"{cls_name}.{name}: {top}"
        assert f"At most {top:,}." in param.help.get(), f"{cls_name}.{name}: help"
        assert param.validate(top) == []
        errors = param.validate(top + 1)
        assert errors and f"must be at most {top:,}, got {top + 1:,}: lower it" in errors[0]


@pytest.mark.parametrize("protocol,values,match", [
    # the probe's cases
    ("ProtReconstructKnownPoses", {"iterations": 10**9},
     r"\*Iterations\* must be at most 10,000, got 1,000,000,000"),
    ("ProtRefine", {"initialIterations": 10**9},
     r"\*ADMM iterations, first volume\* must be at most"),
    ("ProtAlignSymmetryAxis", {"maxOrder": 10**6}, r"\*Largest order tried\* must be at most 100,"),
    ("ProtAbInitio", {"nDirections": 10**8}, r"\*N_d\* must be at most 4,096"),
    # others of the same kind
    ("ProtAbInitio", {"maxEpochs": 10**6}, r"\*Maximum number of epochs\* must be at most"),
    ("ProtSimulateDataset", {"nParticles": 10**9}, r"\*Number of particles\* must be at most"),
    ("ProtSimulateDataset", {"boxSize": 100, "nParticles": 5000},
     r"The simulation holds 5,000,000,000 voxels"),
    ("ProtSymmetrize", {"symmetryOrder": 10**6}, r"\*Symmetry order \(0 = estimate\)\* must be"),
    ("ProtCompareVolumes", {"symmetry": 10**4}, r"\*Symmetry order \(Cn about z\)\* must be"),
    ("ProtRefine", {"exhaustiveIterations": 10**7}, r"\*Most exhaustive iterations\* must be"),
    ("ProtPickParticles", {"seed": -1}, r"\*Random seed\* must be at least 0"),
])
def test_unbounded_work_is_refused_before_launch(project, protocol, values, match):
    assert_rejected(project, protocol, match, **values)


def test_search_grids_are_estimated_before_launch():
    assert parse_schedule("20:all, 5:10, 1:5") == [[20.0, None], [5.0, 10.0], [1.0, 5.0]]
    with pytest.raises(ValueError, match=r"stage '1:all'.* tries 14,[\d,]+ rotations per "
                                         r"particle, more than 200,000: use a coarser step"):
        parse_schedule("20:all, 1:all")
    with pytest.raises(ValueError, match=r"stage '0.01:5'"):
        parse_schedule("0.01:5")
    assert parse_schedule("3:all", symmetry=9) == [[3.0, None]]  # one asymmetric unit
    with pytest.raises(ValueError, match="rotations per particle"):
        parse_schedule("3:all")
    assert limits.global_search_rotations(20) == 104 * 18
    assert limits.local_search_rotations(1, 5) == 11**3
    assert limits.search_size_error(20, what="x") is None
    assert limits.orientations_error(64, 8) is None
    assert "draw fewer" in limits.orientations_error(4096, 360)


@pytest.mark.parametrize("gpus", ["0;touch x", "0 1;", "a", "", "0--1", "3-1", "0-100000000",
                                  "$(touch x)"])
def test_gpu_lists_the_engine_cannot_read_are_refused(project, gpus):
    """A malformed GPU list failed later with 'Process ... not found'."""
    assert_rejected(project, "ProtReconstructKnownPoses",
                    rf"GPU ids {re.escape(repr(gpus))} are not a list of GPU ids: give numbers",
                    useGpu=True, gpuList=gpus)


def test_gpu_lists_the_engine_reads_are_accepted():
    from spfluo.protocols.base import gpu_list_error

    for gpus in ("0", "0 1", "0,2", " 1, 2 ", "0-3", "0-1 4"):
        assert gpu_list_error(gpus) is None, gpus


def test_command_line_counts_have_a_maximum(tmp_path, capsys):
    """Worker processes and figure resolutions: the command line and the functions."""
    from spfluo.batch.runner import run_batch
    from spfluo.catalog.sync import sync
    from spfluo.cli import build_parser
    from spfluo.report import write_report

    parser = build_parser()
    for args in (["show", "p", "1.x", "--save", "a.png", "--dpi", "100000"],
                 ["report", "p", "--dpi", "100000"], ["batch", "t", "d", "--workers", "100000"]):
        with pytest.raises(SystemExit):
            parser.parse_args(args)
        assert "must be from" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers must be an integer >= 1 and <= 256"):
        run_batch("t", ["d"], out=tmp_path, workers=10**6)
    with pytest.raises(ValueError, match="jobs must be >= 1 and <= 256"):
        sync(str(tmp_path), f"sqlite:///{tmp_path / 'c.sqlite'}", jobs=10**6)
    with pytest.raises(ValueError, match="dpi must be an integer >= 10 and <= 600"):
        write_report(None, tmp_path, dpi=10**6)
