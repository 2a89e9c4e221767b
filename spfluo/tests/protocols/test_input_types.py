"""An input that points to an output of another type gets a clear error, in every protocol."""

import pyworkflow.protocol.params as params
import pytest

from spfluo.protocols import ProtSimulateDataset
from spfluo.tests._projects import assert_rejected, finished
from spfluo.workflow import protocol_classes


@pytest.fixture
def simulated(launch):
    return finished(launch(ProtSimulateDataset, boxSize=12, nParticles=2, nSpots=0))


def test_the_probe_case_names_the_expected_type(project, simulated):
    """`spfluo run p ProtReconstructKnownPoses inputParticles=44.outputPSF`."""
    run = simulated.getObjId()
    assert_rejected(project, "ProtReconstructKnownPoses",
                    rf"^Particles \(with poses\) \(inputParticles\) must be a SetOfParticles, "
                    rf"but run {run}.outputPSF is a PSFModel: choose an output of type "
                    r"SetOfParticles",
                    inputParticles=(simulated, "outputPSF"))


def test_every_input_of_every_protocol_checks_its_type(project, simulated):
    checked = 0
    for name, cls in sorted(protocol_classes().items()):
        for key, param in cls().getDefinition().iterParams():
            if not isinstance(param, params.PointerParam):
                continue
            expected = set(param.pointerClass.get().split(","))
            wrong = next(out for out, obj in simulated.iterOutputAttributes()
                         if not expected & {c.__name__ for c in type(obj).__mro__})
            assert_rejected(project, name, rf"\({key}\) must be a .* but run "
                                           rf"{simulated.getObjId()}.{wrong} is a ",
                            **{key: (simulated, wrong)})
            checked += 1
    assert checked >= 15
