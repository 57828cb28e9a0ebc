"""Support-set augmentations: more normal views from the few good images a few-shot detector is given.

One to eight good images cannot show every orientation, position and lighting a normal part comes in; each
augmented copy adds the patches such a part would produce, so the memory bank stops flagging ordinary
variation as a defect. Which views help depends on the product (a round bottle seen from above is the same
bottle rotated; a textured tile lit differently is still a good tile), so each kind is switched and sized on
its own.

Everything takes and returns (B, 3, H, W) float images in [0, 1]; randomness comes only from the
``torch.Generator`` handed in, so a seed fixes every view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lineguard.errors import ParameterError
from lineguard.params import NON_NEGATIVE, Interval, check_params


class AugmentationError(ParameterError):
    """An augmentation setting outside its meaningful range."""


def grayscale(images: Tensor) -> Tensor:
    """ITU-R 601 luma copied to all three channels: colour is taken away, the layout stays."""
    import torchvision.transforms.v2.functional as TF  # noqa: N812  (lazy: a slow import)

    return TF.rgb_to_grayscale(images, num_output_channels=3)


def hflip(images: Tensor) -> Tensor:
    """Mirror left ↔ right."""
    return torch.flip(images, dims=[-1])


def vflip(images: Tensor) -> Tensor:
    """Mirror top ↔ bottom."""
    return torch.flip(images, dims=[-2])


def _reflect_pad(images: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
    """Reflection padding; falls back to edge replication where the image is too small to reflect."""
    mode = "reflect" if max(left, right) < images.shape[-1] and max(top, bottom) < images.shape[-2] else "replicate"
    return F.pad(images, (left, right, top, bottom), mode=mode)


def translate(images: Tensor, dx: int, dy: int) -> Tensor:
    """Move the content ``dx`` pixels right and ``dy`` down (negative: left / up), size unchanged.

    The uncovered border is filled by reflecting the image, not with a constant: a black band would put
    patches into the bank that no real part has.
    """
    h, w = images.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        raise AugmentationError(f"shift ({dx}, {dy}) px moves the whole {h}x{w} image out of view")
    padded = _reflect_pad(images, max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + h, left:left + w]


def rotate(images: Tensor, angle: float) -> Tensor:
    """Rotate by ``angle`` degrees counter-clockwise about the centre, size unchanged (bilinear).

    The image is reflection-padded first, just enough that the rotated frame never reaches past the padding,
    so the corners show mirrored content rather than black triangles.
    """
    import torchvision.transforms.v2.functional as TF  # noqa: N812  (lazy: a slow import)

    h, w = images.shape[-2:]
    theta = math.radians(angle)
    spill = max(h, w) / 2 * (abs(math.cos(theta)) + abs(math.sin(theta)) - 1)
    pad = math.ceil(spill) + 1
    padded = _reflect_pad(images, pad, pad, pad, pad)
    turned = TF.rotate(padded, angle, interpolation=TF.InterpolationMode.BILINEAR)
    return turned[..., pad:pad + h, pad:pad + w]


def zoom(images: Tensor, factor: float) -> Tensor:
    """Scale the content by ``factor`` about the centre, size unchanged (bilinear): > 1 crops into a magnified
    view, < 1 shrinks it and fills the border by reflection. A part closer to the camera, or a texture whose
    images come in other sizes, is the same part at another scale."""
    h, w = images.shape[-2:]
    scaled = F.interpolate(images, size=(max(1, round(h * factor)), max(1, round(w * factor))), mode="bilinear",
                           align_corners=False, antialias=factor < 1)
    dy, dx = h - scaled.shape[-2], w - scaled.shape[-1]
    if factor < 1:
        return _reflect_pad(scaled, dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)
    top, left = -dy // 2, -dx // 2
    return scaled[..., top:top + h, left:left + w]


def adjust_brightness(images: Tensor, factor: float) -> Tensor:
    """Scale intensities by ``factor`` (clipped to [0, 1]): a brighter or darker exposure."""
    import torchvision.transforms.v2.functional as TF  # noqa: N812  (lazy: a slow import)

    return TF.adjust_brightness(images, factor)


def adjust_contrast(images: Tensor, factor: float) -> Tensor:
    """Blend each image with its mean grey level: ``factor`` < 1 flattens, > 1 stretches (clipped)."""
    import torchvision.transforms.v2.functional as TF  # noqa: N812  (lazy: a slow import)

    return TF.adjust_contrast(images, factor)


#: What each setting of :class:`Augmentations` may be; the few-shot detector declares its view parameters so.
VIEW_CONSTRAINTS = {
    "max_angle": [Interval(float, 0, 180)], "max_shift": [Interval(float, 0, 0.5, closed="left")],
    "zoom_delta": [Interval(float, 0, 0.5)], "brightness_delta": [Interval(float, 0, 1, closed="left")],
    "contrast_delta": [Interval(float, 0, 1, closed="left")],
    **{count: [NON_NEGATIVE] for count in ("rotation_views", "translation_views", "zoom_views", "brightness_views",
                                           "contrast_views")}}


@dataclass(frozen=True)
class Augmentations:
    """Which views to add and how many: switches for the fixed ones, counts and ranges for the random ones.

    Random views draw one value per image and copy: rotation angles uniformly in [−max_angle, max_angle]
    degrees, shifts in whole pixels up to ``max_shift`` × the image side in each direction, zoom, brightness
    and contrast factors uniformly in [1 − delta, 1 + delta].
    """

    grayscale: bool = False
    hflip: bool = False
    vflip: bool = False
    rotation_views: int = 0
    max_angle: float = 0.0
    translation_views: int = 0
    max_shift: float = 0.0
    zoom_views: int = 0
    zoom_delta: float = 0.0
    brightness_views: int = 0
    brightness_delta: float = 0.0
    contrast_views: int = 0
    contrast_delta: float = 0.0

    def __post_init__(self) -> None:
        check_params("Augmentations", Augmentations, vars(self), VIEW_CONSTRAINTS, error=AugmentationError)
        for count, size, size_name in ((self.rotation_views, self.max_angle, "max_angle"),
                                       (self.translation_views, self.max_shift, "max_shift"),
                                       (self.zoom_views, self.zoom_delta, "zoom_delta"),
                                       (self.brightness_views, self.brightness_delta, "brightness_delta"),
                                       (self.contrast_views, self.contrast_delta, "contrast_delta")):
            if count and not size:
                raise AugmentationError(f"{count} random views with {size_name}=0 would be plain copies; "
                                        f"set {size_name} > 0 or the count to 0")

    @property
    def views_per_image(self) -> int:
        """Copies each image becomes, the original included."""
        return (1 + self.grayscale + self.hflip + self.vflip + self.rotation_views + self.translation_views
                + self.zoom_views + self.brightness_views + self.contrast_views)

    def expand(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """(B, 3, H, W) -> (B · views_per_image, 3, H, W): the originals first, then each kind of view."""
        n, _, h, w = images.shape
        views = [images]
        views += [fixed(images) for on, fixed in ((self.grayscale, grayscale), (self.hflip, hflip),
                                                  (self.vflip, vflip)) if on]

        def uniform(count: int, half_width: float, centre: float = 0.0) -> Tensor:  # -> (count, B)
            return centre + half_width * (2 * torch.rand(count, n, generator=generator, dtype=torch.float64) - 1)

        def per_image(transform, values) -> Tensor:  # one value per image
            return torch.cat([transform(images[i:i + 1], *v) for i, v in enumerate(values)])

        for angles in uniform(self.rotation_views, self.max_angle).tolist():
            views.append(per_image(rotate, [(a,) for a in angles]))
        limit = max(1, round(self.max_shift * min(h, w)))
        for _ in range(self.translation_views):
            shifts = torch.randint(-limit, limit + 1, (n, 2), generator=generator).tolist()
            views.append(per_image(translate, shifts))
        for factors in uniform(self.zoom_views, self.zoom_delta, 1.0).tolist():
            views.append(per_image(zoom, [(f,) for f in factors]))
        for factors in uniform(self.brightness_views, self.brightness_delta, 1.0).tolist():
            views.append(per_image(adjust_brightness, [(f,) for f in factors]))
        for factors in uniform(self.contrast_views, self.contrast_delta, 1.0).tolist():
            views.append(per_image(adjust_contrast, [(f,) for f in factors]))
        return torch.cat(views)  # -> (B · views_per_image, 3, H, W)


# -- a second view of an image as a known affine transform (the Siamese encoder's training pairs) -------------
def random_affines(n: int, generator: torch.Generator, *, max_angle: float, max_shift: float) -> Tensor:
    """(n, 2, 3) affine matrices in normalised coordinates (as ``F.affine_grid`` takes them): a rotation up to
    ``max_angle`` degrees, a horizontal and a vertical flip each with probability ½, and a shift up to
    ``max_shift`` of the image side."""
    angles = torch.deg2rad((2 * torch.rand(n, generator=generator) - 1) * max_angle)
    flips = torch.where(torch.rand(n, 2, generator=generator) < 0.5, -1.0, 1.0)  # (n, 2): x and y mirror
    shifts = (2 * torch.rand(n, 2, generator=generator) - 1) * 2 * max_shift  # normalised coords span 2
    cos, sin = angles.cos(), angles.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    linear = rotation * flips[:, None, :]  # rotate after mirroring the sampling coordinates
    return torch.cat([linear, shifts[..., None]], dim=-1)


def invert_affines(theta: Tensor) -> Tensor:
    """(n, 2, 3) -> (n, 2, 3): the transform that undoes each one."""
    inverse = torch.linalg.inv(theta[:, :, :2])
    return torch.cat([inverse, -inverse @ theta[:, :, 2:]], dim=-1)


def warp(x: Tensor, theta: Tensor, padding: str) -> Tensor:
    """(B, C, H, W) sampled through (B, 2, 3) affines: out(p) = x(θ p), bilinear, with ``padding``."""
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def random_brightness(images: Tensor, generator: torch.Generator, delta: float) -> Tensor:
    """(B, 3, H, W) with each image's intensities scaled by a factor uniform in [1 − delta, 1 + delta]."""
    factors = 1 + (2 * torch.rand(len(images), 1, 1, 1, generator=generator) - 1) * delta
    return (images * factors.to(images)).clamp(0, 1)
