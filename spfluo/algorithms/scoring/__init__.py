"""The pose-scoring engine shared by ab initio, refinement and annealing.

How well does a volume at a pose explain a particle?  Every pose estimator of spfluo asks
it through four modules:

- :mod:`.spectra`: the particles reduced once to their spectra on the OTF support
  (:func:`particle_spectra`, two data models: Gaussian noise, or a fitted intensity scale
  and offset with a linear blur);
- :mod:`.model`: the Fourier model of a volume, ``h^ R f^`` at the support for batches of
  rotations, and its adjoint (:class:`VolumeModel` for a given volume,
  :class:`FourierVolume` for the SGD iterate);
- :mod:`.shifts`: the translations, by correlation surfaces on a grid of shifts and their
  peaks;
- :mod:`.energies`: the candidate energies, with Newton iterations on the exact
  correlation for the best candidates (:class:`Scorer`).

Everything stays on the device of the particle spectra (NumPy or CuPy).
"""

from spfluo.algorithms.scoring.energies import Evaluation, Scorer
from spfluo.algorithms.scoring.model import FourierVolume, VolumeModel
from spfluo.algorithms.scoring.shifts import ShiftSurface
from spfluo.algorithms.scoring.spectra import ParticleSpectra, particle_spectra

__all__ = ["ParticleSpectra", "particle_spectra", "VolumeModel", "FourierVolume",
           "ShiftSurface", "Scorer", "Evaluation"]
