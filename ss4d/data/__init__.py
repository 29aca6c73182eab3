"""SS4D data toolkit: animated 3D assets -> 4D training samples.

Modules (one concept each):

* :mod:`~ss4d.data.gltf` - glTF/GLB container and accessor reader;
  :mod:`~ss4d.data.animation` - keyframe sampling and TRS maths;
  :mod:`~ss4d.data.gltf_animation` - skins / morph targets / node animation -> per-frame meshes;
  :mod:`~ss4d.data.mesh` - :class:`MeshSequence`, Z-up convention, clip normalisation, mesh files;
* :mod:`~ss4d.data.voxelize` - exact surface voxelisation on the TRELLIS 64^3 grid;
* :mod:`~ss4d.data.cameras` - Hammersley orbit views, conditioning camera, ``transforms.json``;
  :mod:`~ss4d.data.render` - Blender (of record, :mod:`~ss4d.data.render_blender`) or PyTorch
  (:mod:`~ss4d.data.rasterize`) renders;
* :mod:`~ss4d.data.features` - DINOv2 features aggregated over visible views;
* :mod:`~ss4d.data.encode` - SS / SLat latents and latent statistics;
* :mod:`~ss4d.data.checks` - consistency checks (voxel silhouettes vs renders);
* :mod:`~ss4d.data.build` - the ``ss4d-build-dataset`` runner. Format: ``docs/data.md``.
"""
