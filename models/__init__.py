"""Model-side code of the meta-initialised indoor depth project.

Submodules (import them directly; this package imports nothing eagerly so that e.g. `models.metrics`
does not pay for importing timm):

* `models.network`  - DepthNet: timm encoder + monodepth2-style multi-scale decoder, metric depth out.
* `models.losses`   - depth_loss: masked MSE + multi-scale second-order smoothness.
* `models.augment`  - online augmentation and the task augmentations (mix-up, channel shuffle).
* `models.reptile`  - Reptile: batched first-order meta-learning for any nn.Module.
* `models.metrics`  - depth_metrics: the standard eight depth metrics.

Pure torch + timm + numpy: no data loading, logging or orchestration lives here.
"""
