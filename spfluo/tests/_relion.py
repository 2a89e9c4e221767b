"""RELION's Euler matrix, typed from its published formula (an oracle independent of
:mod:`spfluo.algorithms.geometry`)."""

import numpy as np

__all__ = ["relion_matrix"]


def relion_matrix(rot, tilt, psi):
    """RELION's ``Euler_angles2matrix`` (src/euler.cpp), angles in degrees: the rotation that
    takes the reference to the particle, acting on ``(x, y, z)``."""
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc, ss, cb]])
