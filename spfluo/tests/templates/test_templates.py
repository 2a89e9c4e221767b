"""Workflow templates: found by the engine's plugin loader, filled, loaded, run on simulations."""

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


def _engine_plugin_templates():
    import pyworkflow as pw

    plugin = pw.Config.getDomain().getPlugins()["spfluo"]
    return plugin._pluginInstance, plugin._pluginInstance.getTemplates()


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
    ("spr_fields_of_view", {"fields", "psf", "examples", "diameter", "voxel_size_xy",
                            "voxel_size_z", "voxel_source", "psf_voxel_source"}),
    ("spr_particles", {"particles", "poses", "psf", "reference", "symmetry", "max_epochs",
                       "voxel_size_xy", "voxel_size_z", "reference_voxel_source"}),
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


def test_fields_template_through_the_engine_api(project, tmp_path):
    """Load the template exactly as the engine's GUI does, then run it in order."""
    from pyworkflow.template import TemplateList

    ds = write_fields_dataset(tmp_path / "fov", n_fields=2, n_examples=2)
    values = read_dataset(ds).values
    templates = TemplateList()
    templates.addPluginTemplates("spfluo-spr_fields_of_view")
    (template,) = templates.templates
    template.replaceEnvVariables()
    template.parseContent()
    for alias in ("fields", "psf", "examples", "diameter"):
        assert template.setParamValue(alias, values[alias]) >= 1
    path = template.createTemplateFile()
    try:
        created = project.loadProtocols(path)
    finally:
        os.remove(path)
    prots = [created[k] for k in sorted(created, key=int)]
    assert [p.getClassName() for p in prots] == ["ProtImportFluoImages", "ProtImportPSF",
                                                 "ProtImportCoordinates"]
    for prot in prots:
        project.launchProtocol(prot, wait=True)
        assert prot.isFinished(), prot.getErrorMessage()
    images = prots[0].outputImages
    assert images.getSize() == 2
    assert np.allclose(images.getVoxelSize(), (0.1, 0.05, 0.05))  # from the files' metadata
    assert prots[1].outputPSF.getShape() == (1, 9, 9, 9)
    coords = prots[2].outputCoordinates
    assert coords.getSize() == 2 and coords.getBoxSize() == pytest.approx(12 * 0.05)
    assert prots[2].inputImages.get().getObjId() == images.getObjId()


@pytest.mark.slow
def test_particles_template_on_simulated_data(spfluo_home, tmp_path):
    ds = write_particles_dataset(
        tmp_path / "barrels", n_particles=8, box=16, voxel_size=0.06, noise_std=0.05,
        values={"max_epochs": 2, "n_directions": 16, "n_psi": 4, "final_reconstruction": 2,
                "registration_step": 45})
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
        assert [r.getClassName() for r in runs] == ["ProtImportParticles", "ProtImportPSF",
                                                    "ProtAbInitio", "ProtImportFluoImages",
                                                    "ProtCompareVolumes"]
        assert [r.getObjLabel() for r in runs] == ["import particles", "import PSF", "ab initio",
                                                   "import reference",
                                                   "compare with the reference"]
        assert all(r.isFinished() for r in runs)
        assert runs[0].outputParticles.getSize() == 8
        assert runs[2].symmetry.get() == 9 and runs[2].maxEpochs.get() == 2  # dataset.json
        assert runs[4].symmetry.get() == 9
        assert runs[4].referenceVolume.get().getFileName().endswith("reference.tif")
        metrics = runs[4].outputComparison.getMetrics()
    finally:
        os.chdir(cwd)
    # the summary row carries the comparison's numbers
    assert float(row["ssim"]) == pytest.approx(metrics["ssim"], rel=1e-3)
    assert float(row["resolution_um"]) == pytest.approx(metrics["fsc_resolution_0143_um"],
                                                        rel=1e-3)
    assert float(row["resolution_um"]) * float(row["resolution_per_voxel"]) == \
        pytest.approx(0.06, rel=2e-3)  # resolution (µm) = voxel size / (cycles per voxel)


def test_optional_protocols_are_left_out(tmp_path):
    ds = write_particles_dataset(tmp_path / "noref", n_particles=2, box=12, reference=False)
    protocols, left_out = fill_template(find_template("spr_particles"), read_dataset(ds).values)
    assert [p["object.className"] for p in protocols] == ["ProtImportParticles",
                                                          "ProtImportPSF", "ProtAbInitio"]
    assert left_out == ["import reference", "compare with the reference"]
    assert protocols[2]["symmetry"] == "9" and protocols[2]["inputPSF"] == "2.outputPSF"
    assert "spfluo.requires" not in protocols[0]


def test_values_are_json_escaped(project, tmp_path):
    odd = tmp_path / 'we"ird\\dir'
    ds = write_fields_dataset(odd, n_fields=1, n_examples=1)
    protocols, _ = fill_template(find_template("spr_fields_of_view"), read_dataset(ds).values)
    assert protocols[0]["filesPattern"] == str(ds.resolve() / "fields" / "*")
    runs = load_workflow(project, protocols)
    assert [r.getObjLabel() for r in runs] == ["import fields of view", "import PSF",
                                               "example particles"]
    assert runs[1].psfFile.get() == str(ds.resolve() / "psf.tif")
    assert all(r.isSaved() for r in runs)


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
                                            "'Symmetry order .*': Value does not seem to be an"):
        fill_template(particles, {"symmetry": "nine"})
    with pytest.raises(TemplateError,
                       match="of 'psf' does not fit field 'PSF file': Path does not exist"):
        fill_template(particles, {"psf": str(tmp_path / "none.tif")})
    with pytest.raises(TemplateError, match="The workflow has no protocol to load"):
        load_workflow(None, [])
