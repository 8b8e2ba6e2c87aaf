"""Attribution maps from Captum, one function for every method: (model, pixels, target) -> (B, H, W) maps.

The model maps pixels in [0, 1] (B, C, H, W) to logits and owns its normalisation (a
:class:`dlkit.vision.classifier.Classifier`), so every map lives in the pixel grid the model sees. Each method's
attribution (B, C, H, W) is reduced to one non-negative importance map per image:

* ``saliency`` (Simonyan et al. 2014): max over channels of |d logit / d pixel|.
* ``smoothgrad`` (Smilkov et al. 2017): the same, averaged over noisy copies (Captum's NoiseTunnel).
* ``integrated-gradients`` (Sundararajan et al. 2017): from a black image; summed over channels, positive part.
* ``gradcam`` (Selvaraju et al. 2017): Captum's LayerGradCam on the last convolutional block of the model
  family (:func:`gradcam_layer`), upsampled bilinearly to the input.
* ``occlusion`` (Zeiler & Fergus 2014): the drop of the logit when a black square hides the pixels;
  summed over channels, positive part.
* ``guided-backprop`` (Springenberg et al. 2015): max over channels of |attribution|. Captum overrides the
  gradient of ``nn.ReLU`` modules only, so a copy of the model gets ReLU6 modules it recognises and no in-place
  ReLUs (:func:`guided_copy`); other activations (GELU) keep their plain gradient.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlkit.core.errors import UsageError

METHODS = ("saliency", "smoothgrad", "integrated-gradients", "gradcam", "occlusion", "guided-backprop")

# The last convolutional block of each classifier family in dlkit (module names inside a Classifier): its
# output is the feature map Grad-CAM weighs. Other models fall back to the last module with a spatial output.
GRADCAM_LAYERS = {
    "efficientnet-lite0": "net._act_head",  # (B, 1280, 7, 7) at 224, after the head's ReLU6
    "mnist-cnn": "net.features.4",  # the second conv of the second stage, before the last max-pool
    "resnet": "net.blocks",  # the last residual block
    "inception-small": "net.features",
    "alexnet-small": "net.features",
}


@dataclass
class MethodConfig:
    ig_steps: int = 32  # integrated gradients: Gauss-Legendre points on the path from the black image
    smooth_samples: int = 16  # smoothgrad: noisy copies
    smooth_sigma: float = 0.15  # smoothgrad: noise std in pixel units, i.e. 15% of the [0, 1] range (Smilkov et al.)
    occlusion_window: int = 0  # occlusion: square side in pixels (0: a seventh of the shorter side)
    batch: int = 16  # images per forward pass inside IG, SmoothGrad and occlusion


def parse_methods(text: str) -> list[str]:
    """``saliency,gradcam`` -> ["saliency", "gradcam"]; ``all`` -> every method; unknown names are a UsageError."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if names == ["all"]:
        return list(METHODS)
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise UsageError(f"--method {text!r}: expected a comma list of {', '.join(METHODS)} (or all)")
    return list(dict.fromkeys(names))


def gradcam_layer(model: nn.Module, input_size) -> nn.Module:
    """The layer Grad-CAM reads: the family's last conv block, else the last module (in execution order) whose
    output is a (B, C, h, w) map with h * w > 1, found with one forward pass on a blank image."""
    arch = getattr(model, "arch", None)
    if arch in GRADCAM_LAYERS:
        return model.get_submodule(GRADCAM_LAYERS[arch])
    found: list[nn.Module] = []

    def hook(mod, inp, out):
        if torch.is_tensor(out) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
            found.append(mod)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=_device(model)))
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise UsageError(f"gradcam needs a convolutional model; '{arch or type(model).__name__}' has no layer with "
                         "a spatial feature map (use saliency or integrated-gradients)")
    return found[-1]


class _HookableReLU6(nn.ReLU):
    """ReLU6 as an ``nn.ReLU`` subclass: Captum's guided backprop overrides the gradient of ``nn.ReLU`` modules
    only (the forward is still min(max(x, 0), 6))."""

    def __init__(self):
        super().__init__(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


def guided_copy(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy whose ReLU6 modules Captum's GuidedBackprop can hook and whose ReLUs are not in place (backward
    hooks refuse in-place outputs); returns it with the number of ReLU-type modules it holds."""
    model = copy.deepcopy(model)
    count = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, _HookableReLU6())
                count += 1
            elif isinstance(child, nn.ReLU):
                child.inplace = False
                count += 1
    return model.eval(), count


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class Explainer:
    """A classifier ready for every method: the Grad-CAM layer and the guided-backprop copy are found once."""

    def __init__(self, model: nn.Module, input_size, cfg: MethodConfig | None = None):
        self.model = model.eval()
        self.input_size = tuple(int(v) for v in input_size)  # (C, H, W)
        self.cfg = cfg or MethodConfig()
        self._layer: nn.Module | None = None
        self._guided: nn.Module | None = None
        self.relus = -1  # ReLU-type modules seen by guided backprop (-1: not prepared yet)

    def layer(self) -> nn.Module:
        if self._layer is None:
            self._layer = gradcam_layer(self.model, self.input_size)
        return self._layer

    def guided(self) -> nn.Module:
        if self._guided is None:
            self._guided, self.relus = guided_copy(self.model)
        return self._guided

    def attribute(self, x: torch.Tensor, target, method: str, seed: int = 0) -> torch.Tensor:
        """Maps (B, H, W) >= 0 (float32, on ``x``'s device) of ``method`` for class ``target`` (int or (B,))."""
        return self.attribute_with_evidence(x, target, method, seed)[0]

    def attribute_with_evidence(self, x: torch.Tensor, target, method: str, seed: int = 0
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(map, evidence), both (B, H, W): the map of :meth:`attribute` and the signed evidence it was clipped
        from (see :func:`signed_map`), which orders the map's equal pixels when they are ranked."""
        import warnings

        with warnings.catch_warnings():  # Captum warns on every call that it sets and removes hooks
            warnings.simplefilter("ignore", UserWarning)
            attr, signed = self._attribute(x, target, method, seed)
        attr = attr.detach()
        return reduce_map(attr, method), (signed_map(attr, method) if signed is None else signed.detach()[:, 0])

    def _attribute(self, x: torch.Tensor, target, method: str, seed: int):
        """(attribution (B, C, H, W), signed Grad-CAM (B, 1, H, W) or None for the other methods)."""
        import captum.attr as ca

        x = x.detach().clone().requires_grad_(True)
        cfg, model = self.cfg, self.model
        if method == "saliency":
            attr = ca.Saliency(model).attribute(x, target=target, abs=True)
        elif method == "smoothgrad":
            torch.manual_seed(seed)  # NoiseTunnel draws its noise from torch's global generator
            attr = ca.NoiseTunnel(ca.Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=cfg.smooth_samples, nt_samples_batch_size=cfg.batch,
                stdevs=cfg.smooth_sigma, target=target)
        elif method == "integrated-gradients":
            attr = ca.IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                          n_steps=cfg.ig_steps, internal_batch_size=cfg.batch)
        elif method == "gradcam":  # Selvaraju et al.: ReLU on the coarse map, then upsampling; the signed map too
            cam = ca.LayerGradCam(model, self.layer()).attribute(x, target=target, relu_attributions=False)
            size = tuple(x.shape[-2:])
            signed = ca.LayerAttribution.interpolate(cam.detach(), size, "bilinear")  # (B, 1, H, W)
            return ca.LayerAttribution.interpolate(cam.clamp_min(0), size, "bilinear"), signed
        elif method == "occlusion":
            c, side = x.shape[1], min(x.shape[-2:])
            k = cfg.occlusion_window or max(2, round(side / 7))
            s = max(1, k // 2)
            attr = ca.Occlusion(model).attribute(x, sliding_window_shapes=(c, k, k), strides=(c, s, s), baselines=0.0,
                                                 target=target, perturbations_per_eval=cfg.batch)
        elif method == "guided-backprop":
            attr = ca.GuidedBackprop(self.guided()).attribute(x, target=target)
        else:
            raise UsageError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        return attr, None


def reduce_map(attr: torch.Tensor, method: str) -> torch.Tensor:
    """(B, C, H, W) attribution -> (B, H, W) non-negative importance (see the module docstring)."""
    attr = attr.float()
    if method in ("integrated-gradients", "occlusion", "gradcam"):
        return attr.sum(1).clamp_min(0)
    return attr.abs().amax(1)


def signed_map(attr: torch.Tensor, method: str) -> torch.Tensor:
    """(B, C, H, W) attribution -> (B, H, W) signed evidence for the methods whose map is its positive part
    (summed over channels: negative where the pixels count against the class); the map itself for the others."""
    if method in ("integrated-gradients", "occlusion", "gradcam"):
        return attr.float().sum(1)
    return reduce_map(attr, method)
