"""Projects for the catalog tests and benchmark: one real template project, copied.

The template holds 10 runs: 6 real imports launched through pyworkflow
(fields of view twice, a PSF, coordinates, particles with poses, and one
that fails), and 4 runs stored through the engine's API: a failed import,
and the outputs a reconstruction and a comparison store (a Volume with its resolution, FSC
file and half maps; SSIM and PSNR as Float outputs) and their input pointers
and source relations.  No reconstruction protocol exists yet to produce
them for real; the catalog reads them exactly as it will read those.

Projects are relocatable folders (paths inside are relative to the project
folder; imported files are symbolic links to the data folder), so copies
of the template are independent projects that share their data.

Call :func:`spfluo.environment.bootstrap` first (the conftest does).
"""

from __future__ import annotations

import functools
import os
import shutil

import numpy as np

from spfluo.tests._projects import launch_protocol, new_project, run_statuses

__all__ = ["make_data", "build_template", "copy_project", "store_run", "volume_output",
           "RECON_RESOLUTIONS", "N_RUNS"]

#: Resolutions (µm) stored on the two reconstructions of the template (particles, images).
RECON_RESOLUTIONS = (0.12, 0.2)
N_RUNS = 10


def make_data(folder) -> dict:
    """Small input files: 2 fields of view, 2 more with another voxel size, a PSF, 3 particles."""
    from spfluo.io import write_poses_csv, write_volume

    folder = str(folder)
    os.makedirs(os.path.join(folder, "fov"), exist_ok=True)
    os.makedirs(os.path.join(folder, "fov2"), exist_ok=True)
    os.makedirs(os.path.join(folder, "particles"), exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        write_volume(os.path.join(folder, "fov", f"fov_{k}.tif"),
                     rng.random((6, 16, 16)).astype(np.float32), (0.3, 0.1, 0.1))
        write_volume(os.path.join(folder, "fov2", f"cell_{k}.tif"),
                     rng.random((4, 12, 12)).astype(np.float32), (0.25, 0.1, 0.1))
    z, y, x = np.indices((7, 9, 9))
    psf = np.exp(-((z - 3.2) ** 2 / 4 + (y - 4.1) ** 2 / 2 + (x - 3.9) ** 2 / 2)).astype(np.float32)
    write_volume(os.path.join(folder, "psf.tif"), psf, (0.2, 0.1, 0.1))
    for k in range(3):
        write_volume(os.path.join(folder, "particles", f"p{k}.tif"),
                     rng.random((8, 8, 8)).astype(np.float32), (0.05, 0.05, 0.05))
    write_poses_csv(os.path.join(folder, "poses.csv"), np.arange(3), np.tile(np.eye(4), (3, 1, 1)))
    return {"fov": os.path.join(folder, "fov", "fov_*.tif"),
            "fov2": os.path.join(folder, "fov2", "cell_*.tif"),
            "psf": os.path.join(folder, "psf.tif"),
            "particles": os.path.join(folder, "particles", "p*.tif"),
            "poses": os.path.join(folder, "poses.csv"),
            "coords": _coords(folder)}


def _coords(folder) -> str:
    path = os.path.join(folder, "coords.csv")
    with open(path, "w") as f:
        f.write("image_id,x,y,z\nfov_0,0.8,0.8,0.6\nfov_1,0.5,0.9,0.9\n")
    return path


def store_run(project, cls, *, label, pointers=(), outputs=None, params=None,
              status="finished", times=("2026-11-20 10:00:00.000000", "2026-11-20 10:05:30.000000"),
              error=None):
    """Store a run with outputs through the engine's API (no step is executed).

    ``pointers``: (attribute, source run, output name); each becomes an input
    pointer and a source relation of every output.  ``outputs``: name ->
    object or a callable ``f(prot) -> object`` (to write files in the run's
    folder first).  ``params``: form values.
    """
    import pyworkflow.object as pwobj

    prot = project.newProtocol(cls, **(params or {}))
    prot.setObjLabel(label)
    for attr, source, output in pointers:
        if hasattr(prot, attr) and isinstance(getattr(prot, attr), pwobj.Pointer):
            getattr(prot, attr).set(source)
            getattr(prot, attr).setExtended(output)
        else:
            setattr(prot, attr, pwobj.Pointer(source, extended=output))
    project.saveProtocol(prot)
    os.makedirs(prot._getExtraPath(), exist_ok=True)
    made = {name: (obj(prot) if callable(obj) else obj) for name, obj in (outputs or {}).items()}
    if made:
        prot._defineOutputs(**made)
        for attr, _, _ in pointers:
            for obj in made.values():
                if not isinstance(obj, pwobj.Scalar):
                    prot._defineRelation(pwobj.RELATION_SOURCE, getattr(prot, attr), obj)
    prot.setStatus(status)
    prot.initTime.set(times[0])
    prot.endTime.set(times[1])
    if error:
        prot._error.set(error)
    project._storeProtocol(prot)
    project.mapper.commit()
    return prot


def volume_output(name: str, resolution: float):
    """An output maker: a Volume with files, half maps, an FSC curve and its resolution (µm)."""
    def make(prot):
        from spfluo.objects import Volume

        paths = {}
        for part, size in (("vol", 4096), ("half1", 2048), ("half2", 2048)):
            paths[part] = prot._getExtraPath(f"{name}_{part}.tif")
            with open(paths[part], "wb") as f:
                f.write(np.random.default_rng(len(name) + size).bytes(size))
        fsc = prot._getExtraPath(f"{name}_fsc.csv")
        with open(fsc, "w") as f:
            f.write("frequency_per_voxel,fsc\n0.0,1.0\n0.25,0.5\n0.5,0.05\n")
        vol = Volume(filename=paths["vol"], voxelSize=(0.05, 0.05, 0.05), shape=(8, 8, 8))
        vol.setHalfMaps(paths["half1"], paths["half2"])
        vol.setFscFile(fsc)
        vol.setResolution(resolution)
        return vol

    return make


def build_template(path, data: dict):
    """Create the 10-run template project at ``path`` (about 8 s); returns {key: run id}."""
    import pyworkflow.object as pwobj

    from spfluo.protocols import (
        ProtImportCoordinates,
        ProtImportFluoImages,
        ProtImportParticles,
        ProtImportPSF,
    )

    with new_project(path) as project:
        launch = functools.partial(launch_protocol, project)
        ids = {}
        imp = launch(ProtImportFluoImages, label="fields", filesPattern=data["fov"])
        psf = launch(ProtImportPSF, label="psf", psfFile=data["psf"])
        coords = launch(ProtImportCoordinates, label="picks",
                        inputImages=(imp, "outputImages"), coordinatesFile=data["coords"],
                        boxSize=0.6)
        parts = launch(ProtImportParticles, label="particles",
                       filesPattern=data["particles"], posesFile=data["poses"], copyFiles=True)
        imp2 = launch(ProtImportFluoImages, label="cells", filesPattern=data["fov2"],
                      voxelSizeSource=1, voxelSizeXY=0.1, voxelSizeZ=0.25)
        bad1 = launch(ProtImportFluoImages, label="typo",
                      filesPattern=os.path.join(os.path.dirname(data["fov"]), "none_*.tif"))
        missing = os.path.join(os.path.dirname(data["psf"]), "missing.tif")
        bad2 = store_run(project, ProtImportPSF, label="no psf", status="failed",
                         error=f"Protocol has validation errors:\nPSF file {missing} does not "
                               "exist: check the path.")
        recon = store_run(project, ProtImportCoordinates, label="reconstruct particles",
                          pointers=[("inputParticles", parts, "outputParticles"),
                                    ("inputPSF", psf, "outputPSF")],
                          outputs={"outputVolume": volume_output("recon", RECON_RESOLUTIONS[0])})
        recon2 = store_run(project, ProtImportCoordinates, label="reconstruct fields",
                           pointers=[("inputImages", imp, "outputImages"),
                                     ("inputPSF", psf, "outputPSF")],
                           outputs={"outputVolume": volume_output("recon2", RECON_RESOLUTIONS[1])})
        compare = store_run(project, ProtImportCoordinates, label="compare",
                            pointers=[("inputVolume", recon, "outputVolume")],
                            outputs={"ssim": pwobj.Float(0.83), "psnr_db": pwobj.Float(21.5),
                                     "note": pwobj.String("not a metric")})
        for key, prot in (("fields", imp), ("psf", psf), ("picks", coords), ("particles", parts),
                          ("cells", imp2), ("typo", bad1), ("no_psf", bad2), ("recon", recon),
                          ("recon2", recon2), ("compare", compare)):
            ids[key] = prot.getObjId()
        statuses = run_statuses(project)
        expected_failed = {ids["typo"], ids["no_psf"]}
        wrong = {k: s for k, s in statuses.items() if (s == "failed") != (k in expected_failed)}
        if wrong:
            raise RuntimeError(f"template project: unexpected run statuses {wrong}")
        project.closeMapper()
    return ids


def copy_project(template, dest) -> str:
    """Copy a project folder (symbolic links kept as links); returns the copy's path."""
    shutil.copytree(str(template), str(dest), symlinks=True)
    return str(dest)
