# -*- coding: utf-8 -*-
"""
@article{Fortun2018,
  title = {Reconstruction From Multiple Particles for 3D Isotropic Resolution in Fluorescence Microscopy},
  author = {Fortun, Denis and Guichard, Paul and Hamel, Virginie and Sorzano, Carlos Oscar S. and Banterle, Niccolò and Gönczy, Pierre and Unser, Michael},
  journal = {IEEE Transactions on Medical Imaging},
  volume = {37},
  number = {5},
  pages = {1235--1246},
  year = {2018},
  doi = {http://dx.doi.org/10.1109/TMI.2018.2795464}
}

@inproceedings{Fortun2017,
  title = {Reconstruction from multiple poses in fluorescence imaging: Proof of concept},
  author = {Fortun, Denis and Guichard, Paul and Chu, Nicolas and Unser, Michael},
  booktitle = {IEEE International Symposium on Biomedical Imaging (ISBI)},
  year = {2017}
}

@misc{Eloy2023,
  title = {Fast and Robust Single Particle Reconstruction in 3D Fluorescence Microscopy},
  author = {Eloy, Thibaut and Baudrier, Etienne and Laporte, Marine and Hamel, Virginie and Guichard, Paul and Fortun, Denis},
  note = {Single particle reconstruction by SGD with importance sampling of orientations},
  year = {2023}
}

@phdthesis{Donati2020,
  title = {Reconstruction methods for cryo-electron microscopy},
  author = {Donati, Laurène},
  school = {École polytechnique fédérale de Lausanne (EPFL)},
  year = {2020}
}

@article{Zehni2020,
  title = {Joint Angular Refinement and Reconstruction for Single-Particle Cryo-EM},
  author = {Zehni, Mona and Donati, Laurène and Soubies, Emmanuel and Zhao, Zhizhen and Unser, Michael},
  journal = {IEEE Transactions on Image Processing},
  volume = {29},
  pages = {6151--6163},
  year = {2020},
  doi = {http://dx.doi.org/10.1109/TIP.2020.2984313}
}

@article{Gibson1991,
  title = {Experimental test of an analytical model of aberration in an oil-immersion objective lens used in three-dimensional light microscopy},
  author = {Gibson, Sarah Frisken and Lanni, Frederick},
  journal = {Journal of the Optical Society of America A},
  volume = {8},
  number = {10},
  pages = {1601--1613},
  year = {1991},
  doi = {http://dx.doi.org/10.1364/JOSAA.8.001601}
}

@article{Aguet2009,
  title = {Super-resolution orientation estimation and localization of fluorescent dipoles using 3-D steerable filters},
  author = {Aguet, François and Geissbühler, Stefan and Märki, Iwan and Lasser, Theo and Unser, Michael},
  journal = {Optics Express},
  volume = {17},
  number = {8},
  pages = {6829--6848},
  year = {2009},
  doi = {http://dx.doi.org/10.1364/OE.17.006829}
}

@article{Chen2013,
  title = {High-resolution noise substitution to measure overfitting and validate resolution in 3D structure determination by single particle electron cryomicroscopy},
  author = {Chen, Shaoxia and McMullan, Greg and Faruqi, Abdul R. and Murshudov, Garib N. and Short, Judith M. and Scheres, Sjors H. W. and Henderson, Richard},
  journal = {Ultramicroscopy},
  volume = {135},
  pages = {24--35},
  year = {2013},
  doi = {http://dx.doi.org/10.1016/j.ultramic.2013.06.004}
}

@article{Rosenthal2003,
  title = {Optimal determination of particle orientation, absolute hand, and contrast loss in single-particle electron cryomicroscopy},
  author = {Rosenthal, Peter B. and Henderson, Richard},
  journal = {Journal of Molecular Biology},
  volume = {333},
  number = {4},
  pages = {721--745},
  year = {2003},
  doi = {http://dx.doi.org/10.1016/j.jmb.2003.07.013}
}

@article{Scheres2012,
  title = {Prevention of overfitting in cryo-EM structure determination},
  author = {Scheres, Sjors H. W. and Chen, Shaoxia},
  journal = {Nature Methods},
  volume = {9},
  number = {9},
  pages = {853--854},
  year = {2012},
  doi = {http://dx.doi.org/10.1038/nmeth.2115}
}
"""
