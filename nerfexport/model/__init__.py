"""The model: positional encoding, the NeRF MLP, checkpoints (and nerf-pytorch import), surgery. Needs torch.

The public functions and classes, each documented with its arguments, returns and tensor shapes:

* :class:`nerfexport.model.mlp.NeRF` (coarse and fine :class:`~nerfexport.model.mlp.NeRFMLP`,
  ``(pts (N, 3), viewdirs (N, 3)) -> raw (N, 4)``, and :meth:`~nerfexport.model.mlp.NeRFMLP.density`)
  with its :class:`~nerfexport.model.mlp.NeRFConfig` and :class:`~nerfexport.model.mlp.MLPConfig`;
* :func:`nerfexport.model.checkpoint.save_checkpoint`, :func:`~nerfexport.model.checkpoint.load_checkpoint`,
  :func:`~nerfexport.model.checkpoint.import_nerf_pytorch`: checkpoints, checked field by field;
* :func:`nerfexport.model.surgery.activation_stats`, :func:`~nerfexport.model.surgery.prune_model`,
  :func:`~nerfexport.model.surgery.widen_model`: networks made narrower or wider.

The torch runtime that renders a checkpoint lives on the train floor
(:mod:`nerfexport.train.torch_runtime`), since it needs the train side's device choice.
"""
