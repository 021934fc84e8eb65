"""The deploy side: bundle manifest and reading, occupancy bits, rays, the lean renderer, runtimes.

Nothing here imports torch or the train, shrink or export stages (a test checks the import graph).

The public functions, each documented with its arguments, returns and array shapes:

* :func:`nerfexport.deploy.bundle.open_bundle`: read and check a bundle folder;
* :func:`nerfexport.deploy.runtime.load_runtime`, :func:`~nerfexport.deploy.runtime.check_available`:
  a runtime file, and whether it can run here;
* :func:`nerfexport.deploy.networks.make_networks`, :func:`~nerfexport.deploy.networks.open_source`:
  the one network factory (a runtime family per kind: onnxruntime, TensorRT, and the torch
  baseline handed in from the train side);
* :func:`nerfexport.deploy.render.make_renderer`, :meth:`~nerfexport.deploy.render.Renderer.render_view`,
  :meth:`~nerfexport.deploy.render.Renderer.render_rays`: the lean renderer;
* :func:`nerfexport.deploy.volume.linspace_depths`, :func:`~nerfexport.deploy.volume.sample_pdf`,
  :func:`~nerfexport.deploy.volume.composite`: volume rendering along rays;
* :func:`nerfexport.deploy.run.run_render`: the render entry (views of a bundle or checkpoint to PNGs);
* :func:`nerfexport.deploy.tune.tune_runtime`: the fastest settings for a bundle on this machine;
* :func:`nerfexport.deploy.machine.machine`: this machine's CPU by name.
"""
