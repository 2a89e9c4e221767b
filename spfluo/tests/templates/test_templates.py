"""Workflow templates: found by the engine's plugin loader, filled, loaded, run on simulations.

The two chain tests load a template exactly as the engine's GUI does (``TemplateList``,
``parseContent``, ``setParamValue``, ``createTemplateFile``, ``Project.loadProtocols``) and
launch its protocols in order on tiny simulated data: they check that the whole chain runs
and that its outputs are sane (shapes, voxel sizes, channels, symmetry, and a comparison
with the ground truth well above what a wrong reconstruction scores).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import spfluo
from spfluo.batch.dataset import read_dataset
from spfluo.batch.runner import STATE_FILE, process_dataset
from spfluo.batch.simulated import write_fields_dataset, write_particles_dataset
from spfluo.batch.templates import (
    TemplateError,
    fill_template,
    find_template,
    list_templates,
    load_workflow,
    template_fields,
)

TEMPLATE_DIR = Path(spfluo.__file__).parent / "templates"
NAMES = {"spr_fields_of_view", "spr_particles"}
FIELDS_CHAIN = ["ProtImportFluoImages", "ProtImportPSF", "ProtImportCoordinates",
                "ProtPickParticles", "ProtExtractParticles", "ProtAbInitio",
                "ProtAlignSymmetryAxis", "ProtRefine", "ProtImportFluoImages",
                "ProtCompareVolumes"]
FIELDS_LABELS = ["import fields of view", "import PSF", "example particles", "pick particles",
                 "extract particles", "ab initio", "align symmetry axis", "refine",
                 "import reference", "compare with the reference"]
PARTICLES_CHAIN = ["ProtImportParticles", "ProtImportPSF", "ProtAbInitio",
                   "ProtAlignSymmetryAxis", "ProtRefine", "ProtImportFluoImages",
                   "ProtCompareVolumes"]
PARTICLES_LABELS = ["import particles", "import PSF", "ab initio", "align symmetry axis",
                    "refine", "import reference", "compare with the reference"]
#: Few iterations everywhere: the tests check the chain, not the quality.
FAST = {"max_epochs": 8, "n_directions": 16, "n_psi": 6, "final_reconstruction": 2,
        "refine_schedule": "15:all, 5:10", "refine_iterations": 2, "continuous_iterations": 0,
        "registration_step": 45}


def _engine_plugin_templates():
    import pyworkflow as pw

    plugin = pw.Config.getDomain().getPlugins()["spfluo"]
    return plugin._pluginInstance, plugin._pluginInstance.getTemplates()


def _load_with_engine(project, template_id: str, values: dict) -> list:
    """The GUI's path: the engine's template list, its fields, its workflow loader."""
    from pyworkflow.template import TemplateList

    templates = TemplateList()
    templates.addPluginTemplates(template_id)
    (template,) = templates.templates
    template.replaceEnvVariables()
    template.parseContent()
    aliases = {p.getAlias() for p in template.getParams().values()}
    for alias, value in values.items():
        if alias in aliases:
            assert template.setParamValue(alias, str(value)) >= 1
    path = template.createTemplateFile()
    try:
        created = project.loadProtocols(path)
    finally:
        os.remove(path)
    return [created[k] for k in sorted(created, key=int)]


def _run_in_order(project, prots) -> None:
    for prot in prots:
        project.launchProtocol(prot, wait=True)
        assert prot.isFinished(), f"{prot.getObjLabel()}: {prot.getErrorMessage()}"


def _tiny_fields_dataset(folder):
    """Two small fields of C9 barrels (2 channels) in the batch layout, from the demo."""
    from spfluo.demo import demo_settings, simulate_demo_data

    settings = demo_settings(
        quick=True, field_shape=(16, 72, 72), field_voxel_size=(0.1, 0.05, 0.05),
        phantom_box=24, particles_per_field=4, n_debris=0, touching_pairs=0, n_examples=3,
        particle_voxel_size=0.1, psf_sigma_um=(0.24, 0.06))
    data = simulate_demo_data(folder, settings)
    return data, settings


def test_engine_finds_the_templates():
    instance, templates = _engine_plugin_templates()
    assert Path(instance.getPluginTemplateDir()) == TEMPLATE_DIR
    assert {t.name for t in templates} == NAMES == {t.name for t in list_templates()}
    by_name = {t.name: t for t in templates}
    assert by_name["spr_fields_of_view"].description.startswith("SPR from fields of view")
    assert by_name["spr_particles"].description.startswith("SPR from extracted particles")
    assert by_name["spr_particles"].getObjId() == "spfluo-spr_particles"
    assert find_template("spfluo-spr_particles").name == "spr_particles"
    assert find_template(str(TEMPLATE_DIR / "spr_particles.json.template")).source == "local"


@pytest.mark.parametrize("name, aliases", [
    ("spr_fields_of_view", {"fields", "psf", "examples", "diameter", "box_size",
                            "particle_voxel_size", "symmetry", "voxel_size_xy", "voxel_size_z",
                            "voxel_source", "psf_voxel_source", "reference", "max_epochs",
                            "refine_weight", "search_channels"}),
    ("spr_particles", {"particles", "poses", "psf", "reference", "symmetry", "max_epochs",
                       "voxel_size_xy", "voxel_size_z", "reference_voxel_source",
                       "refine_weight", "refine_schedule"}),
])
def test_template_fields(name, aliases):
    fields = template_fields(find_template(name))
    titles = [f.getTitle() for f in fields]
    assert len(set(titles)) == len(titles)
    assert aliases <= {f.getAlias() for f in fields}
    for f in fields:
        assert f.getType() in (0, 1, 2, 3, 4)
        if f.getType() == 2:  # path fields: no default, the dataset gives the file
            assert f.getValue() == ""
        if f.getType() in (3, 4):
            float(f.getValue())


def test_full_chains_in_launch_order():
    """Every pointer of the filled templates points to a protocol listed before it."""
    for name, chain in (("spr_fields_of_view", FIELDS_CHAIN), ("spr_particles", PARTICLES_CHAIN)):
        protocols, left_out = fill_template(find_template(name), {"reference": __file__,
                                                                 "examples": __file__})
        assert [p["object.className"] for p in protocols] == chain and left_out == []
    fov, _ = fill_template(find_template("spr_fields_of_view"),
                           {"symmetry": "9", "examples": __file__, "reference": __file__})
    by_class = {p["object.className"]: p for p in fov}
    # one alias gives the order to the axis alignment, the refinement and the comparison
    assert by_class["ProtAlignSymmetryAxis"]["symmetryOrder"] == "9"
    assert by_class["ProtRefine"]["symmetry"] == "9"
    assert by_class["ProtCompareVolumes"]["symmetry"] == "9"
    assert by_class["ProtAbInitio"]["symmetry"] == "1"  # the axis is found afterwards
    assert by_class["ProtRefine"]["inputParticles"] == "7.outputParticles"
    assert by_class["ProtRefine"]["inputVolume"] == "7.outputVolume"
    # without a symmetry: the alignment passes the volume on (C1), no symmetry anywhere
    fov, _ = fill_template(find_template("spr_fields_of_view"), {"examples": __file__})
    by_class = {p["object.className"]: p for p in fov}
    assert by_class["ProtAlignSymmetryAxis"]["symmetryOrder"] == "1"
    assert by_class["ProtRefine"]["symmetry"] == "1"


def test_fields_template_through_the_engine_api(project, tmp_path):
    """Load the template as the engine's GUI does, then run the whole chain in order."""
    data, s = _tiny_fields_dataset(tmp_path / "fov")
    values = {**read_dataset(data.folder).values, **FAST, "search_channels": "0"}
    prots = _load_with_engine(project, "spfluo-spr_fields_of_view", values)
    assert [p.getClassName() for p in prots] == FIELDS_CHAIN
    _run_in_order(project, prots)

    images, psf, examples, picked, particles, abinitio, axis, refined, ref, compare = prots
    assert images.outputImages.getSize() == 2
    assert np.allclose(images.outputImages.getVoxelSize(), (0.1, 0.05, 0.05))  # from the files
    assert np.allclose(psf.outputPSF.getVoxelSize(), (0.1,) * 3)
    assert examples.outputCoordinates.getSize() == 3
    assert examples.outputCoordinates.getBoxSize() == pytest.approx(s.box_um)
    n = picked.outputCoordinates.getSize()
    assert 3 <= n <= 2 * s.particles_per_field + 2  # the examples are kept, few false picks
    parts = particles.outputParticles
    assert parts.getSize() == n and parts.getBoxShape() == (12, 12, 12)  # 1.2 µm / 0.1 µm
    assert np.allclose(parts.getVoxelSize(), (0.1,) * 3) and parts.getNumChannels() == 2
    assert abinitio.symmetry.get() == 1 and abinitio.maxEpochs.get() == FAST["max_epochs"]
    assert axis.outputVolume.symmetryOrder.get() == 9
    assert axis.outputParticles.getSize() == n
    assert refined.symmetry.get() == 9 and refined.searchChannels.get() == "0"
    volume = refined.outputVolume
    assert volume.getDimensions() == (12, 12, 12) and volume.getNumChannels() == 2
    assert refined.outputParticles.getSize() == n
    assert compare.symmetry.get() == 9
    assert ref.outputImages.getSize() == 1 and compare.referenceVolume.getExtended() == \
        "outputImages.1"
    assert compare.inputVolume.get().getObjId() == volume.getObjId()
    m = compare.outputComparison.getMetrics()
    # on this coarse grid a hollow tube of the right size scores 0.91, a hollow sphere 0.59, a
    # solid cylinder 0.24 and a blob < 0 (registered modulo C9): the shape must be right
    assert m["ssim"] > 0.7, m
    # a number only when the FSC crosses 0.143 below Nyquist (else None: not a measurement)
    if m["fsc_resolution_0143_per_voxel"] is not None:
        assert 0 < m["fsc_resolution_0143_per_voxel"] < 0.5
        assert m["fsc_resolution_0143_um"] * m["fsc_resolution_0143_per_voxel"] == \
            pytest.approx(0.1, rel=1e-3)
    else:
        assert m["fsc_resolution_0143_um"] is None


def test_particles_template_through_the_engine_api(project, tmp_path):
    ds = write_particles_dataset(tmp_path / "barrels", n_particles=16, box=16, voxel_size=0.06,
                                 noise_std=0.05)
    values = {**read_dataset(ds).values, **FAST}
    prots = _load_with_engine(project, "spfluo-spr_particles", values)
    assert [p.getClassName() for p in prots] == PARTICLES_CHAIN
    _run_in_order(project, prots)
    imported, psf, abinitio, axis, refined, ref, compare = prots
    assert imported.outputParticles.getSize() == 16
    assert abinitio.symmetry.get() == 1  # the C9 axis (dataset.json) is found afterwards
    assert axis.outputVolume.symmetryOrder.get() == 9 and refined.symmetry.get() == 9
    assert refined.inputParticles.get().getObjId() == axis.outputParticles.getObjId()
    assert refined.outputVolume.getDimensions() == (16, 16, 16)
    assert refined.outputParticles.getSize() == 16
    assert compare.inputVolume.get().getObjId() == refined.outputVolume.getObjId()
    m = compare.outputComparison.getMetrics()
    # a hollow sphere scores 0.46 and a solid cylinder 0.23 on this grid (see above)
    assert m["ssim"] > 0.6, m
    assert 0 < m["fsc_resolution_0143_per_voxel"] <= 0.5


@pytest.mark.slow
def test_particles_template_in_a_batch(spfluo_home, tmp_path):
    """The same template through ``spfluo batch``'s worker: the summary row has the metrics."""
    ds = write_particles_dataset(tmp_path / "barrels", n_particles=8, box=16, voxel_size=0.06,
                                 noise_std=0.05, values={**FAST, "max_epochs": 3})
    task = {"dataset": str(ds), "project": "tmpl-particles", "template": "spr_particles",
            "home": spfluo_home}
    cwd = os.getcwd()
    row = process_dataset(task)
    assert os.getcwd() == cwd
    assert row["status"] == "finished", row["error"]
    assert row["left_out"] == []  # the dataset has a reference: the comparison runs

    from spfluo.workflow import open_project

    project = open_project("tmpl-particles")
    try:
        state = json.loads((Path(project.getPath()) / STATE_FILE).read_text())
        runs = [project.getProtocol(i) for i in state["runs"]]
        assert [r.getClassName() for r in runs] == PARTICLES_CHAIN
        assert [r.getObjLabel() for r in runs] == PARTICLES_LABELS
        assert all(r.isFinished() for r in runs)
        assert runs[0].outputParticles.getSize() == 8
        assert runs[2].maxEpochs.get() == 3 and runs[3].symmetryOrder.get() == 9  # dataset.json
        assert runs[4].symmetry.get() == 9 and runs[6].symmetry.get() == 9
        assert runs[6].referenceVolume.get().getFileName().endswith("reference.tif")
        metrics = runs[6].outputComparison.getMetrics()
    finally:
        os.chdir(cwd)
    # the summary row carries the comparison's numbers
    assert float(row["ssim"]) == pytest.approx(metrics["ssim"], rel=1e-3)
    assert float(row["ssim"]) == pytest.approx(metrics["ssim"], rel=1e-3)
    if metrics["fsc_resolution_0143_um"] is None:  # never crossed: no number, the reason
        assert row["resolution_um"] == row["resolution_per_voxel"] == ""
        assert "not reached" in row["resolution_text"] or "not measured" in \
            row["resolution_text"], row["resolution_text"]
    else:
        assert float(row["resolution_um"]) == pytest.approx(
            metrics["fsc_resolution_0143_um"], rel=1e-3)
        # resolution (µm) = voxel size / (cycles per voxel)
        assert float(row["resolution_um"]) * float(row["resolution_per_voxel"]) == \
            pytest.approx(0.06, rel=2e-3)
        assert float(row["resolution_text"].split()[0]) == pytest.approx(
            float(row["resolution_um"]), rel=1e-2)


def test_optional_protocols_are_left_out(tmp_path):
    ds = write_particles_dataset(tmp_path / "noref", n_particles=2, box=12, reference=False)
    protocols, left_out = fill_template(find_template("spr_particles"), read_dataset(ds).values)
    assert [p["object.className"] for p in protocols] == PARTICLES_CHAIN[:5]
    assert left_out == ["import reference", "compare with the reference"]
    assert protocols[2]["symmetry"] == "1" and protocols[2]["inputPSF"] == "2.outputPSF"
    assert protocols[3]["symmetryOrder"] == "9" and protocols[4]["symmetry"] == "9"
    assert protocols[4]["inputParticles"] == "4.outputParticles"
    assert "spfluo.requires" not in protocols[0]
    # without examples nothing can be picked: the chain stops after the imports
    fov = write_fields_dataset(tmp_path / "noex", n_fields=1, n_examples=1)
    os.remove(fov / "examples.csv")
    protocols, left_out = fill_template(find_template("spr_fields_of_view"),
                                        read_dataset(fov).values)
    assert [p["object.className"] for p in protocols] == FIELDS_CHAIN[:2]
    assert left_out == FIELDS_LABELS[2:]


def test_values_are_json_escaped(project, tmp_path):
    odd = tmp_path / 'we"ird\\dir'
    ds = write_fields_dataset(odd, n_fields=1, n_examples=1)
    protocols, left_out = fill_template(find_template("spr_fields_of_view"),
                                        read_dataset(ds).values)
    assert protocols[0]["filesPattern"] == str(ds.resolve() / "fields" / "*")
    assert left_out == ["import reference", "compare with the reference"]
    runs = load_workflow(project, protocols)
    assert [r.getObjLabel() for r in runs] == FIELDS_LABELS[:8]
    assert runs[1].psfFile.get() == str(ds.resolve() / "psf.tif")
    assert all(r.isSaved() for r in runs)
    pointer = runs[7].inputParticles  # to an output that does not exist yet
    assert pointer.getObjValue().getObjId() == runs[6].getObjId()
    assert pointer.getExtended() == "outputParticles"


def _write_template(path, protocols, description="A test template."):
    path.write_text(description + "\n" + json.dumps(protocols, indent=1))
    return str(path)


def test_template_errors(tmp_path):
    with pytest.raises(TemplateError, match="No template 'nope': known templates are "
                                            "spr_fields_of_view, spr_particles"):
        find_template("nope")
    with pytest.raises(TemplateError, match="No template given"):
        find_template("")
    psf = tmp_path / "psf.tif"
    psf.write_bytes(b"x")
    imp = {"object.className": "ProtImportFluoImages", "object.id": "1",
           "filesPattern": "~Files||0|fields~"}
    coords = {"object.className": "ProtImportCoordinates", "object.id": "2",
              "object.label": "coords", "inputImages": "1.outputImages"}
    forward = _write_template(tmp_path / "fwd.json.template", [coords, imp])
    with pytest.raises(TemplateError, match=r"coords \(inputImages\) points to protocol 1, which "
                                            "is not listed before it"):
        fill_template(find_template(forward), {})
    unknown = _write_template(tmp_path / "unk.json.template",
                              [{"object.className": "ProtNoSuch", "object.id": "1"}])
    with pytest.raises(TemplateError, match="protocol 'ProtNoSuch' .* is not installed"):
        fill_template(find_template(unknown), {})
    twice = _write_template(tmp_path / "twice.json.template",
                            [{**imp, "copyFiles": "~Files||1|copy~"}])
    with pytest.raises(TemplateError, match="two fields share a title"):
        template_fields(find_template(twice))
    tilde = _write_template(tmp_path / "tilde.json.template",
                            [{**imp, "filesPattern": "~Files||0|fields"}])
    with pytest.raises(TemplateError, match="odd number of '~'"):
        template_fields(find_template(tilde))
    same_id = _write_template(tmp_path / "same.json.template", [imp, {**imp, "filesPattern": ""}])
    with pytest.raises(TemplateError, match="two protocols have the id 1"):
        fill_template(find_template(same_id), {})
    particles = find_template("spr_particles")
    with pytest.raises(TemplateError, match="value 'nine' of 'symmetry' does not fit field "
                                            ".*'Symmetry order .*': Value does not seem to be an"):
        fill_template(particles, {"symmetry": "nine"})
    with pytest.raises(TemplateError,
                       match="of 'psf' does not fit field 'PSF file': Path does not exist"):
        fill_template(particles, {"psf": str(tmp_path / "none.tif")})
    with pytest.raises(TemplateError, match="The workflow has no protocol to load"):
        load_workflow(None, [])
