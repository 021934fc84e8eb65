"""Training: torch volume rendering, the occupancy grid used while training, the training loop. Needs torch.

One job a module: ``device`` (where a network runs and at which precision), ``volume`` (sampling
and compositing), ``render`` (a model over rays and views), ``evaluate`` (held-out PSNR and SSIM),
``occupancy`` (the grid that guides sampling), ``factory`` (the models training starts from),
``loop`` (the training loop), ``run`` (files to files: ``nerfexport train``, ``eval``, ``import``),
``torch_runtime`` (a checkpoint's networks behind the renderer's network interface: the torch
baseline of ``render`` and ``bench``).

The public functions, each documented with its arguments, returns and tensor shapes:

* :func:`nerfexport.train.run.run_train`, :func:`~nerfexport.train.run.run_eval`: train or
  evaluate from files to files;
* :func:`nerfexport.train.loop.train` with :class:`~nerfexport.train.loop.TrainConfig`: the loop;
* :func:`nerfexport.train.factory.new_model`: a fresh model for a scene;
* :func:`nerfexport.train.render.render_rays`, :func:`~nerfexport.train.render.render_image`,
  :func:`~nerfexport.train.render.run_network`, :func:`~nerfexport.train.render.scene_rays`:
  hierarchical volume rendering of ``R`` rays or a whole view;
* :func:`nerfexport.train.volume.stratified_samples`, :func:`~nerfexport.train.volume.sample_pdf`,
  :func:`~nerfexport.train.volume.composite`, :func:`nerfexport.train.occupancy.grid_samples`:
  depths along rays and compositing;
* :func:`nerfexport.train.evaluate.evaluate`, :func:`~nerfexport.train.evaluate.eval_pixels`,
  :func:`~nerfexport.train.evaluate.pixel_psnr`: held-out quality;
* :func:`nerfexport.train.device.pick_device`, :func:`~nerfexport.train.device.autocast_dtype`:
  device and precision.
"""
