"""Offline generators for the paper's synthetic source domains: ``syn_numbers_gen`` and ``syn_signs_gen``.

Neither needs a download. Both follow the published recipes, not the published files, so the
images differ from the releases (domains ``syn_numbers`` and ``syn_signs`` in
:mod:`dann.data.real`); results on them are reported under their own names and are not
comparable number-for-number with the paper's.

``syn_numbers_gen`` (SynNumbers, Ganin & Lempitsky 2015: "synthetic digits rendered from fonts,
with varied position, orientation, colours, blur"): 1- to 3-digit numbers rendered with the
fonts matplotlib ships (DejaVu Sans/Serif/Mono, STIX, Computer Modern: the same files on every
machine, so no dependence on system fonts) in 32x32 RGB crops centred on one digit, labelled by
that centre digit (the middle of three, the one nearest the centre of two); neighbours may be
cut at the borders, as in SVHN's crops. Position, size, rotation, stroke width, colours
(with a minimum luminance contrast), background gradient, optional outline, blur and noise are
drawn at random. Default sizes 100,000 train / 10,000 test (``SYN_NUMBERS_SIZES``); the real
SynNumbers has 479,400 / 9,553.

``syn_signs_gen`` (SynSigns, Moiseev et al. 2013: GTSRB's 43 pictograms rendered, transformed
and placed on backgrounds): the 43 classes drawn procedurally with PIL at 4x resolution
(circles, triangles, inverted triangle, octagon, diamond; red rims, white and blue fills,
speed-limit numbers, grey end-of-restriction stripes, simple arrow and warning pictograms),
then rotated, scaled, perspective-projected, motion/Gaussian-blurred, brightness/contrast/
saturation-jittered and placed on random gradients and low-frequency colour noise, 40x40 RGB,
classes balanced. ``syn_signs_gen_photo`` puts half of them on crops of the BSDS500 photos
instead (it needs them, like ``mnist_m_regen``); two domains, so that a domain name always
means the same images whatever a user's data root holds. Default
sizes 100,000 train / 10,000 test (``SYN_SIGNS_SIZES``); the real SynSigns has 100,000 images.

Determinism: every random draw comes from ``numpy.random.default_rng([seed, chunk])``, where
the domain's seed is a per-split module constant and ``chunk`` the index of a block of
``CHUNK`` images, and labels from ``default_rng([seed, LABEL_STREAM])``; so a (seed, n) gives the
same images whatever the number of worker processes. Glyph rasterisation is FreeType's, via
Pillow: another Pillow/FreeType version may change a few pixel values, never the labels.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from tqdm import tqdm

from dann.data.domains import DataError, Domain, Split, register
from dann.data.mnistm import bsds_present

CHUNK = 500  # images per independently seeded block
LABEL_STREAM = 2**31 - 1  # the RNG stream of the label permutation (chunk indices are smaller)

N_TRAIN = 100_000  # default images per train split (real SynNumbers: 479,400; SynSigns: 100,000)
N_TEST = 10_000  # default images per test split (real SynNumbers: 9,553)
# per-generator split sizes, read when a split is built (tests shrink them with monkeypatch.setitem)
SYN_NUMBERS_SIZES = {"train": N_TRAIN, "test": N_TEST}
SYN_SIGNS_SIZES = {"train": N_TRAIN, "test": N_TEST}
SYN_NUMBERS_SEEDS = {"train": 31_415_001, "test": 31_415_002}
SYN_SIGNS_SEEDS = {"train": 27_182_001, "test": 27_182_002}


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


# Fonts matplotlib ships whose digits 0-9 are ordinary glyphs (cmmi10 has old-style figures,
# cmsy10/cmex10 and the STIX size variants have no digits at all).
DIGIT_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)


@lru_cache(maxsize=None)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = _font_dir() / name
    if not path.is_file():
        raise DataError(f"font {path} is missing: matplotlib's bundled fonts are needed to render digits")
    return ImageFont.truetype(str(path), size)


def _labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    """Balanced labels: round-robin over the classes, then a seeded shuffle (counts differ by <= 1)."""
    y = np.arange(n, dtype=np.int64) % num_classes
    np.random.default_rng([seed, LABEL_STREAM]).shuffle(y)
    return y


def _pool_context():
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _run_chunks(fn: Callable, n: int, seed: int, y: np.ndarray, extra: tuple, workers: int | None,
                desc: str, shape: tuple[int, ...]) -> np.ndarray:
    """Call ``fn(seed, chunk_index, labels_of_chunk, *extra)`` for each chunk, in order, in a pool."""
    starts = list(range(0, n, CHUNK))
    jobs = [(fn, seed, k, y[a:a + CHUNK], extra) for k, a in enumerate(starts)]
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(jobs) >= 4 else 1
    out = np.empty((n, *shape), dtype=np.uint8)
    bar = tqdm(total=n, desc=f"[dann] {desc}", unit="img", leave=False, mininterval=1.0)
    try:
        if workers <= 1:
            results = map(_call, jobs)
            for a, r in zip(starts, results):
                out[a:a + len(r)] = r
                bar.update(len(r))
        else:
            with _pool_context().Pool(workers) as pool:
                for a, r in zip(starts, pool.imap(_call, jobs)):
                    out[a:a + len(r)] = r
                    bar.update(len(r))
    finally:
        bar.close()
    return out


def _call(job):
    fn, seed, k, y, extra = job
    return fn(seed, k, y, *extra)


def _to_split(x_nhwc: np.ndarray, y: np.ndarray) -> Split:
    return Split(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y.copy()))


def _luma(c: np.ndarray) -> np.ndarray:
    return c @ np.array([0.299, 0.587, 0.114])


# ====================================================================================== numbers
NUM_SIZE = 32


@lru_cache(maxsize=20_000)
def _glyph(font_name: str, size: int, stroke: int, digit: int) -> tuple[Image.Image, int, int, int]:
    """A digit's ink as an L mask, with its ink box offsets from the baseline anchor and its width."""
    font = _font(font_name, size)
    l, t, r, b = font.getbbox(str(digit), anchor="ls", stroke_width=stroke)
    im = Image.new("L", (max(1, r - l), max(1, b - t)), 0)
    ImageDraw.Draw(im).text((-l, -t), str(digit), font=font, fill=255, anchor="ls", stroke_width=stroke,
                            stroke_fill=255)
    return im, l, t, r - l


def _digit_mask(digits: Sequence[int], centre: int, font_name: str, size: int, stroke: int, angle: float,
                gap: float, shift: tuple[float, float], blur: float, outline: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Masks (32x32 float in [0,1]) of the number's fill and, if ``outline`` > 0, of its outline."""
    S = NUM_SIZE
    W, H = 4 * S, 2 * S
    glyphs = [_glyph(font_name, size, stroke, d) for d in digits]
    widths = [g[3] for g in glyphs]
    # left edge of each ink box, the centre digit's ink centred at W/2
    lefts = [0.0] * len(digits)
    lefts[centre] = W / 2 - widths[centre] / 2
    for i in range(centre - 1, -1, -1):
        lefts[i] = lefts[i + 1] - gap - widths[i]
    for i in range(centre + 1, len(digits)):
        lefts[i] = lefts[i - 1] + widths[i - 1] + gap
    cim = glyphs[centre][0]
    top = H / 2 - cim.size[1] / 2 - glyphs[centre][2]  # baseline y so that the centre digit's ink is centred
    canvas = Image.new("L", (W, H), 0)
    for (im, _, t, _), x0 in zip(glyphs, lefts):
        canvas.paste(255, (int(round(x0)), int(round(top + t))), im)
    # one affine resampling: rotate about the canvas centre and cut the SxS window around the shifted centre;
    # output pixel (X, Y) reads input M @ (X + ox - W/2, Y + oy - H/2) + (W/2, H/2)
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    ox, oy = shift[0] - S / 2, shift[1] - S / 2
    im = canvas.transform((S, S), Image.AFFINE, (ca, sa, ca * ox + sa * oy + W / 2,
                                                 -sa, ca, -sa * ox + ca * oy + H / 2), Image.BILINEAR)
    edge = im.filter(ImageFilter.MaxFilter(2 * outline + 1)) if outline else None
    if blur > 0:
        im = im.filter(ImageFilter.GaussianBlur(blur))
        edge = edge.filter(ImageFilter.GaussianBlur(blur)) if edge is not None else None
    return (np.asarray(im, dtype=np.float32) / 255.0,
            None if edge is None else np.asarray(edge, dtype=np.float32) / 255.0)


def _muted(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Random colours pulled towards their grey by a random amount (street-number colours are rarely pure)."""
    g = _luma(c)[:, None]
    return g + (c - g) * rng.uniform(0.1, 1.0, (len(c), 1))


def _contrasting_colours(rng: np.random.Generator, n: int, min_contrast: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    bg = _muted(rng, rng.uniform(0, 255, (n, 3)))
    fg = _muted(rng, rng.uniform(0, 255, (n, 3)))
    bad = np.abs(_luma(fg) - _luma(bg)) < min_contrast
    while bad.any():  # redraw the foreground until luminances differ enough
        fg[bad] = _muted(rng, rng.uniform(0, 255, (int(bad.sum()), 3)))
        bad = np.abs(_luma(fg) - _luma(bg)) < min_contrast
    return bg, fg


def _numbers_chunk(seed: int, chunk: int, y: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([seed, chunk])
    n, S = len(y), NUM_SIZE
    # every random draw of the chunk at once (vectorised; per-image Python only composes the masks)
    ndig = rng.choice([1, 2, 3], size=n, p=[0.25, 0.35, 0.40])
    centre = np.where(ndig == 3, 1, (rng.random(n) * ndig).astype(int))
    digits = rng.integers(0, 10, (n, 3))
    font_idx = rng.integers(len(DIGIT_FONTS), size=n)
    size = rng.integers(19, 37, size=n)  # font pixel size; digit ink height ~ 0.43-0.85 of 32
    stroke = (rng.random(n) < 0.3).astype(int)  # faux-bold by 1 px
    outline = (rng.random(n) < 0.15).astype(int)  # a 1-px outline in a third colour
    angle = np.clip(rng.normal(0, 6, n), -15, 15)
    gap = rng.uniform(-1, 6, n)
    shift = rng.uniform(-1.5, 1.5, (n, 2))
    blur = np.where(rng.random(n) < 0.5, rng.uniform(0.3, 1.0, n), 0.0)
    fill = np.empty((n, S, S), np.float32)
    edge = np.zeros((n, S, S), np.float32)
    for i in range(n):
        d = [int(v) for v in digits[i, :ndig[i]]]
        d[centre[i]] = int(y[i])
        f, e = _digit_mask(d, int(centre[i]), DIGIT_FONTS[font_idx[i]], int(size[i]), int(stroke[i]),
                           float(angle[i]), float(gap[i]), (float(shift[i, 0]), float(shift[i, 1])),
                           float(blur[i]), int(outline[i]))
        fill[i] = f
        if e is not None:
            edge[i] = e
    bg, fg = _contrasting_colours(rng, n)
    oc = _muted(rng, rng.uniform(0, 255, (n, 3))).astype(np.float32)  # outline colour
    # background: base colour + a linear gradient in a random direction + fine noise
    t = np.linspace(-0.5, 0.5, S, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    ramp = np.cos(ang)[:, None, None] * t[None, None, :] + np.sin(ang)[:, None, None] * t[None, :, None]
    amp = rng.uniform(-60, 60, (n, 3)).astype(np.float32)
    img = bg.astype(np.float32)[:, None, None, :] + ramp[..., None] * amp[:, None, None, :]
    img += (oc[:, None, None, :] - img) * edge[..., None]
    img += (fg.astype(np.float32)[:, None, None, :] - img) * fill[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0, 8, n).astype(np.float32)[:, None, None, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def generate_syn_numbers(n: int, seed: int, workers: int | None = None) -> Split:
    """``n`` SynNumbers-style 3x32x32 images labelled by their centre digit (deterministic for ``seed``)."""
    y = _labels(n, 10, seed)
    x = _run_chunks(_numbers_chunk, n, seed, y, (), workers, "syn_numbers_gen", (NUM_SIZE, NUM_SIZE, 3))
    return _to_split(x, y)


def build_syn_numbers_gen(root: Path, split: str) -> Split:
    n = SYN_NUMBERS_SIZES[split]
    print(f"[dann] generating syn_numbers_gen/{split}: {n:,} images (seed {SYN_NUMBERS_SEEDS[split]})")
    return generate_syn_numbers(n, SYN_NUMBERS_SEEDS[split])


# ======================================================================================== signs
SIGN_SIZE = 40
SIGN_SS = 1  # composition scale (1: directly at 40x40 from the 48-px templates; 2: at 80x80, then reduced)
TPL = 96  # template side (pixels) after its 4x-supersampled drawing is reduced
WTPL = 48 * SIGN_SS  # side of the copies that are warped into the image (about the sign's size there)
TPL_SS = 4
NUM_SIGN_CLASSES = 43
MIN_STD = 16.0  # minimum per-image pixel std of a sign image (real SynSigns: 5th percentile 18)

RED, WHITE, BLUE, BLACK = (200, 25, 35), (245, 245, 240), (25, 70, 170), (25, 25, 25)
YELLOW, GREY, DGREY = (250, 195, 20), (150, 150, 150), (95, 95, 95)
PGREY = (120, 120, 120)  # the pictograms of the grey end-of-restriction signs

SIGN_NAMES = (
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70", "speed limit 80",
    "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing", "no passing for vehicles over 3.5t",
    "right-of-way at the next intersection", "priority road", "yield", "stop", "no vehicles",
    "vehicles over 3.5t prohibited", "no entry", "general caution", "dangerous curve left", "dangerous curve right",
    "double curve", "bumpy road", "slippery road", "road narrows on the right", "road work", "traffic signals",
    "pedestrians", "children crossing", "bicycles crossing", "beware of ice/snow", "wild animals crossing",
    "end of all speed and passing limits", "turn right ahead", "turn left ahead", "ahead only",
    "go straight or right", "go straight or left", "keep right", "keep left", "roundabout mandatory",
    "end of no passing", "end of no passing for vehicles over 3.5t",
)


class _Pen:
    """Drawing in unit coordinates: (0,0) top-left, (1,1) bottom-right of the sign's square."""

    def __init__(self, side: int):
        self.s = side
        self.im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        self.d = ImageDraw.Draw(self.im)

    def p(self, pts):
        return [(x * self.s, y * self.s) for x, y in pts]

    def w(self, v: float) -> int:
        return max(1, int(round(v * self.s)))

    def circle(self, cx, cy, r, fill):
        self.d.ellipse(self.p([(cx - r, cy - r), (cx + r, cy + r)]), fill=fill)

    def poly(self, pts, fill):
        self.d.polygon(self.p(pts), fill=fill)

    def line(self, pts, width, fill, joint="curve"):
        self.d.line(self.p(pts), fill=fill, width=self.w(width), joint=joint)
        r = width / 2  # round caps
        for x, y in (pts[0], pts[-1]):
            self.circle(x, y, r * 0.98, fill)

    def arc(self, cx, cy, r, a0, a1, width, fill):
        self.d.arc(self.p([(cx - r, cy - r), (cx + r, cy + r)]), a0, a1, fill=fill, width=self.w(width))

    def arrow(self, pts, width, fill, head=2.2):
        """A polyline ending in a triangular head pointing along its last segment."""
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        L = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / L, (y1 - y0) / L
        hl, hw = width * head * 0.9, width * head
        bx, by = x1 - ux * hl, y1 - uy * hl
        self.d.line(self.p(list(pts[:-1]) + [(bx + ux * width * 0.3, by + uy * width * 0.3)]), fill=fill,
                    width=self.w(width), joint="curve")
        self.poly([(x1, y1), (bx - uy * hw / 2, by + ux * hw / 2), (bx + uy * hw / 2, by - ux * hw / 2)], fill)

    def text(self, s, box, fill, font="DejaVuSans-Bold.ttf"):
        """Text scaled (non-uniformly) to fill ``box`` = (x0, y0, x1, y1) in unit coordinates."""
        f = _font(font, 200)
        l, t, r, b = f.getbbox(s)
        tmp = Image.new("L", (r - l, b - t), 0)
        ImageDraw.Draw(tmp).text((-l, -t), s, font=f, fill=255)
        x0, y0, x1, y1 = [int(round(v * self.s)) for v in box]
        tmp = tmp.resize((x1 - x0, y1 - y0), Image.LANCZOS)
        self.im.paste(Image.new("RGBA", tmp.size, fill), (x0, y0), tmp)

    def mirrored(self) -> Image.Image:
        return ImageOps.mirror(self.im)


def _triangle(up: bool, inset: float = 0.0):
    h = math.sqrt(3) / 2 * 0.96
    top, bot = (0.5 - h / 2 + 0.03, 0.5 + h / 2 + 0.03) if up else (0.5 + h / 2 - 0.03, 0.5 - h / 2 - 0.03)
    # shrink towards the centroid by `inset` (in units of the side)
    pts = [(0.5, top), (0.02, bot), (0.98, bot)]
    if inset:
        gx, gy = 0.5, (top + 2 * bot) / 3
        k = 1 - inset / 0.28  # 0.28 ~ inradius of a side-0.96 triangle
        pts = [(gx + (x - gx) * k, gy + (y - gy) * k) for x, y in pts]
    return pts


def _prohibitory(p: _Pen, fill=WHITE):
    p.circle(0.5, 0.5, 0.49, RED)
    p.circle(0.5, 0.5, 0.385, fill)


def _end_sign(p: _Pen, stripes: int = 1):
    p.circle(0.5, 0.5, 0.49, DGREY)
    p.circle(0.5, 0.5, 0.47, WHITE)


def _end_stripes(p: _Pen, n: int, colour=BLACK):
    offs = [0.0] if n == 1 else np.linspace(-0.12, 0.12, n)
    w = 0.12 if n == 1 else 0.035
    for o in offs:
        p.line([(0.18 + o, 0.82 + o), (0.82 + o, 0.18 + o)], w, colour)


def _car(p: _Pen, cx, cy, s, colour):
    p.d.rounded_rectangle(p.p([(cx - 0.5 * s, cy - 0.05 * s), (cx + 0.5 * s, cy + 0.35 * s)]), radius=p.w(0.08 * s),
                          fill=colour)
    p.poly([(cx - 0.3 * s, cy - 0.05 * s), (cx - 0.18 * s, cy - 0.35 * s), (cx + 0.18 * s, cy - 0.35 * s),
            (cx + 0.3 * s, cy - 0.05 * s)], colour)
    p.circle(cx - 0.28 * s, cy + 0.38 * s, 0.11 * s, colour)
    p.circle(cx + 0.28 * s, cy + 0.38 * s, 0.11 * s, colour)


def _truck(p: _Pen, cx, cy, s, colour):
    p.poly([(cx - 0.55 * s, cy - 0.3 * s), (cx + 0.2 * s, cy - 0.3 * s), (cx + 0.2 * s, cy + 0.3 * s),
            (cx - 0.55 * s, cy + 0.3 * s)], colour)  # box
    p.poly([(cx + 0.25 * s, cy - 0.1 * s), (cx + 0.45 * s, cy - 0.1 * s), (cx + 0.55 * s, cy + 0.05 * s),
            (cx + 0.55 * s, cy + 0.3 * s), (cx + 0.25 * s, cy + 0.3 * s)], colour)  # cab
    for x in (-0.38, 0.0, 0.4):
        p.circle(cx + x * s, cy + 0.36 * s, 0.1 * s, colour)


def _person(p: _Pen, cx, cy, s, colour, stride=0.18):
    p.circle(cx, cy - 0.42 * s, 0.09 * s, colour)
    p.line([(cx, cy - 0.3 * s), (cx, cy + 0.05 * s)], 0.1 * s, colour)
    p.line([(cx, cy + 0.05 * s), (cx - stride * s, cy + 0.45 * s)], 0.08 * s, colour)
    p.line([(cx, cy + 0.05 * s), (cx + stride * s, cy + 0.45 * s)], 0.08 * s, colour)
    p.line([(cx - 0.15 * s, cy), (cx, cy - 0.22 * s), (cx + 0.16 * s, cy - 0.02 * s)], 0.07 * s, colour)


def _warning(p: _Pen):
    p.poly(_triangle(True), RED)
    p.poly(_triangle(True, inset=0.1), WHITE)


def _draw_sign(c: int) -> Image.Image:
    """The canonical RGBA drawing of GTSRB class ``c`` at TPL*TPL_SS pixels."""
    p = _Pen(TPL * TPL_SS)
    if c in range(9) and c != 6:
        _prohibitory(p)
        s = ("20", "30", "50", "60", "70", "80", None, "100", "120")[c]
        w = 0.44 if len(s) == 2 else 0.56
        p.text(s, (0.5 - w / 2, 0.33, 0.5 + w / 2, 0.67), BLACK)
    elif c == 6:
        _end_sign(p)
        p.text("80", (0.28, 0.33, 0.72, 0.67), GREY)
        _end_stripes(p, 1, DGREY)
    elif c == 9:
        _prohibitory(p)
        _car(p, 0.34, 0.5, 0.3, RED)
        _car(p, 0.66, 0.5, 0.3, BLACK)
    elif c == 10:
        _prohibitory(p)
        _truck(p, 0.35, 0.5, 0.3, RED)
        _car(p, 0.67, 0.5, 0.27, BLACK)
    elif c == 11:
        _warning(p)
        p.line([(0.5, 0.36), (0.5, 0.8)], 0.075, BLACK, joint=None)
        p.line([(0.37, 0.55), (0.63, 0.55)], 0.05, BLACK, joint=None)
        p.poly([(0.5, 0.3), (0.43, 0.4), (0.57, 0.4)], BLACK)
    elif c == 12:
        p.poly([(0.5, 0.01), (0.99, 0.5), (0.5, 0.99), (0.01, 0.5)], WHITE)
        p.poly([(0.5, 0.06), (0.94, 0.5), (0.5, 0.94), (0.06, 0.5)], BLACK)
        p.poly([(0.5, 0.08), (0.92, 0.5), (0.5, 0.92), (0.08, 0.5)], WHITE)
        p.poly([(0.5, 0.22), (0.78, 0.5), (0.5, 0.78), (0.22, 0.5)], YELLOW)
    elif c == 13:
        p.poly(_triangle(False), RED)
        p.poly(_triangle(False, inset=0.1), WHITE)
    elif c == 14:
        a = [math.radians(22.5 + 45 * k) for k in range(8)]
        p.poly([(0.5 + 0.49 * math.cos(t), 0.5 + 0.49 * math.sin(t)) for t in a], WHITE)
        p.poly([(0.5 + 0.46 * math.cos(t), 0.5 + 0.46 * math.sin(t)) for t in a], RED)
        p.text("STOP", (0.16, 0.38, 0.84, 0.62), WHITE)
    elif c == 15:
        _prohibitory(p)
    elif c == 16:
        _prohibitory(p)
        _truck(p, 0.5, 0.5, 0.42, BLACK)
    elif c == 17:
        p.circle(0.5, 0.5, 0.49, RED)
        p.poly([(0.18, 0.42), (0.82, 0.42), (0.82, 0.58), (0.18, 0.58)], WHITE)
    elif c == 18:
        _warning(p)
        p.poly([(0.455, 0.36), (0.545, 0.36), (0.52, 0.66), (0.48, 0.66)], BLACK)
        p.circle(0.5, 0.74, 0.045, BLACK)
    elif c in (19, 20):
        _warning(p)
        p.line([(0.54, 0.8), (0.54, 0.55)], 0.07, BLACK, joint=None)
        p.arc(0.44, 0.55, 0.1, 270, 360, 0.07, BLACK)
        p.arrow([(0.44, 0.45), (0.31, 0.45)], 0.07, BLACK, head=1.8)
        if c == 20:
            return p.mirrored()
    elif c == 21:
        _warning(p)
        p.line([(0.45, 0.82), (0.45, 0.72), (0.58, 0.62), (0.58, 0.55), (0.45, 0.47)], 0.065, BLACK)
        p.arrow([(0.45, 0.47), (0.45, 0.34)], 0.065, BLACK, head=1.8)
    elif c == 22:
        _warning(p)
        p.poly([(0.27, 0.74), (0.73, 0.74), (0.73, 0.79), (0.27, 0.79)], BLACK)
        p.d.pieslice(p.p([(0.29, 0.6), (0.47, 0.88)]), 180, 360, fill=BLACK)
        p.d.pieslice(p.p([(0.53, 0.6), (0.71, 0.88)]), 180, 360, fill=BLACK)
    elif c == 23:
        _warning(p)
        _car(p, 0.5, 0.5, 0.28, BLACK)
        p.line([(0.35, 0.82), (0.41, 0.74), (0.37, 0.67)], 0.035, BLACK)
        p.line([(0.62, 0.82), (0.68, 0.74), (0.64, 0.67)], 0.035, BLACK)
    elif c == 24:
        _warning(p)
        p.line([(0.41, 0.84), (0.41, 0.38)], 0.06, BLACK)
        p.line([(0.62, 0.84), (0.62, 0.66), (0.54, 0.56), (0.54, 0.38)], 0.06, BLACK)
    elif c == 25:
        _warning(p)
        _person(p, 0.44, 0.6, 0.42, BLACK, stride=0.2)
        p.line([(0.52, 0.56), (0.66, 0.78)], 0.04, BLACK)  # shovel
        p.poly([(0.6, 0.82), (0.76, 0.82), (0.7, 0.72)], BLACK)  # heap
    elif c == 26:
        _warning(p)
        p.poly([(0.43, 0.38), (0.57, 0.38), (0.57, 0.82), (0.43, 0.82)], BLACK)
        p.circle(0.5, 0.45, 0.05, (230, 30, 30))
        p.circle(0.5, 0.6, 0.05, (250, 200, 0))
        p.circle(0.5, 0.75, 0.05, (30, 190, 60))
    elif c == 27:
        _warning(p)
        _person(p, 0.5, 0.6, 0.44, BLACK)
    elif c == 28:
        _warning(p)
        _person(p, 0.42, 0.6, 0.44, BLACK)
        _person(p, 0.6, 0.68, 0.3, BLACK)
    elif c == 29:
        _warning(p)
        p.arc(0.36, 0.7, 0.09, 0, 360, 0.03, BLACK)
        p.arc(0.64, 0.7, 0.09, 0, 360, 0.03, BLACK)
        p.line([(0.36, 0.7), (0.45, 0.56), (0.6, 0.56), (0.64, 0.7)], 0.03, BLACK)
        p.line([(0.45, 0.56), (0.5, 0.7), (0.6, 0.56)], 0.03, BLACK)
        p.circle(0.48, 0.44, 0.04, BLACK)
    elif c == 30:
        _warning(p)
        for k in range(3):
            t = math.radians(90 + 60 * k)
            dx, dy = 0.17 * math.cos(t), 0.17 * math.sin(t)
            p.line([(0.5 - dx, 0.62 - dy), (0.5 + dx, 0.62 + dy)], 0.035, BLACK)
            for sgn in (-1, 1):
                bx, by = 0.5 + sgn * dx * 0.6, 0.62 + sgn * dy * 0.6
                for tt in (t + 0.6, t - 0.6):
                    p.line([(bx, by), (bx + sgn * 0.07 * math.cos(tt), by + sgn * 0.07 * math.sin(tt))], 0.025, BLACK)
    elif c == 31:
        _warning(p)
        p.poly([(0.32, 0.62), (0.4, 0.55), (0.6, 0.55), (0.66, 0.46), (0.72, 0.46), (0.7, 0.54), (0.64, 0.6),
                (0.62, 0.66), (0.7, 0.8), (0.64, 0.8), (0.56, 0.68), (0.44, 0.68), (0.36, 0.8), (0.3, 0.8),
                (0.36, 0.67)], BLACK)  # a leaping deer
        p.line([(0.68, 0.47), (0.7, 0.38), (0.74, 0.36)], 0.02, BLACK)
    elif c == 32:
        _end_sign(p)
        _end_stripes(p, 5, DGREY)
    elif c in (33, 34):
        p.circle(0.5, 0.5, 0.49, BLUE)
        p.line([(0.44, 0.82), (0.44, 0.5)], 0.1, WHITE, joint=None)
        p.arc(0.56, 0.5, 0.12, 180, 270, 0.1, WHITE)
        p.arrow([(0.56, 0.38), (0.8, 0.38)], 0.1, WHITE, head=2.0)
        if c == 34:
            return p.mirrored()
    elif c == 35:
        p.circle(0.5, 0.5, 0.49, BLUE)
        p.arrow([(0.5, 0.84), (0.5, 0.14)], 0.12, WHITE, head=2.0)
    elif c in (36, 37):
        p.circle(0.5, 0.5, 0.49, BLUE)
        p.arrow([(0.42, 0.86), (0.42, 0.14)], 0.09, WHITE, head=2.0)
        p.line([(0.42, 0.6), (0.5, 0.47)], 0.09, WHITE, joint=None)
        p.arrow([(0.5, 0.47), (0.84, 0.47)], 0.09, WHITE, head=2.0)
        if c == 37:
            return p.mirrored()
    elif c in (38, 39):
        p.circle(0.5, 0.5, 0.49, BLUE)
        p.arrow([(0.28, 0.28), (0.74, 0.74)], 0.12, WHITE, head=2.0)
        if c == 39:
            return p.mirrored()
    elif c == 40:
        p.circle(0.5, 0.5, 0.49, BLUE)
        for k in range(3):
            a0 = 120 * k + 200
            p.arc(0.5, 0.5, 0.25, a0, a0 + 75, 0.09, WHITE)
            t = math.radians(a0 + 75)
            ex, ey = 0.5 + 0.25 * math.cos(t), 0.5 + 0.25 * math.sin(t)
            tx, ty = -math.sin(t), math.cos(t)  # clockwise tangent (image y points down)
            p.poly([(ex + 0.12 * tx, ey + 0.12 * ty), (ex - 0.1 * ty, ey + 0.1 * tx), (ex + 0.1 * ty, ey - 0.1 * tx)],
                   WHITE)
    elif c == 41:
        _end_sign(p)
        _car(p, 0.32, 0.52, 0.3, PGREY)
        _car(p, 0.68, 0.52, 0.3, PGREY)
        _end_stripes(p, 5, DGREY)
    elif c == 42:
        _end_sign(p)
        _truck(p, 0.38, 0.5, 0.4, PGREY)  # a big truck: the one pictogram that tells 42 from 41
        _car(p, 0.74, 0.53, 0.24, PGREY)
        _end_stripes(p, 5, DGREY)
    else:
        raise ValueError(f"no GTSRB class {c}")
    return p.im


@lru_cache(maxsize=None)
def sign_templates() -> tuple[Image.Image, ...]:
    """The 43 class drawings, RGBA TPLxTPL, reduced from 4x with antialiasing (cached per process)."""
    return tuple(_draw_sign(c).resize((TPL, TPL), Image.LANCZOS) for c in range(NUM_SIGN_CLASSES))


@lru_cache(maxsize=None)
def _warp_templates() -> tuple[Image.Image, ...]:
    """The templates reduced (antialiased) to about their on-image size, so the warp never minifies much."""
    return tuple(t.resize((WTPL, WTPL), Image.LANCZOS) for t in sign_templates())


def _perspective_coeffs_batch(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """PIL PERSPECTIVE data (n, 8) mapping each output quad ``dst[i]`` (4x2) to the input quad ``src`` (4x2)."""
    n = len(dst)
    x, y = dst[..., 0], dst[..., 1]
    u, v = np.broadcast_to(src[:, 0], x.shape), np.broadcast_to(src[:, 1], x.shape)
    A = np.zeros((n, 8, 8))
    one, zero = np.ones_like(x), np.zeros_like(x)
    A[:, 0::2] = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    A[:, 1::2] = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    b = np.stack([u, v], -1).reshape(n, 8)
    return np.linalg.solve(A, b[..., None])[..., 0]


_PALETTE = np.array([[90, 150, 220], [150, 190, 235], [120, 120, 125], [40, 40, 45], [15, 15, 20],
                     [70, 100, 50], [120, 100, 70], [215, 215, 210], [60, 70, 90]], np.float32)
# scene-like colours: sky blues, greys, dark shadows, vegetation, earth, pale sky, dusk


def _background(rng: np.random.Generator, side: int, photos: Sequence[np.ndarray] | None) -> Image.Image:
    """A side x side RGB background: a photo crop, a two-colour gradient, or a gradient with blotches."""
    kind = rng.random()
    if photos and kind < 0.5:
        ph = photos[int(rng.integers(len(photos)))]
        c = int(rng.integers(side, min(ph.shape[0], ph.shape[1], 4 * side) + 1))
        y0, x0 = int(rng.integers(0, ph.shape[0] - c + 1)), int(rng.integers(0, ph.shape[1] - c + 1))
        return Image.fromarray(ph[y0:y0 + c, x0:x0 + c]).resize((side, side), Image.BILINEAR)
    a, b = _PALETTE[rng.integers(len(_PALETTE), size=2)] + rng.normal(0, 25, (2, 3))
    # drawn on a coarse g x g grid and upsampled: a linear ramp survives that exactly, blotches get smooth
    g = int(rng.integers(3, 8))
    t = np.linspace(0, 1, g)
    ang = rng.uniform(0, 2 * np.pi)
    ca, sa = np.cos(ang), np.sin(ang)
    ramp = np.clip(0.5 + ca * t[None, :] + sa * t[:, None] - 0.5 * (ca + sa), 0, 1)[..., None]
    img = a + (b - a) * ramp
    if kind > 0.55:  # low-frequency blotches (foliage, buildings), mostly in brightness
        img = img + rng.normal(0, rng.uniform(10, 40), (g, g, 1)) + rng.normal(0, 8, (g, g, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)


def _motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    k = max(2, int(round(length)))
    dx, dy = math.cos(angle), math.sin(angle)
    pad = k
    P = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    H, W = img.shape[:2]
    acc = np.zeros_like(img)
    for t in np.linspace(-length / 2, length / 2, k):
        ox, oy = int(round(t * dx)), int(round(t * dy))
        acc += P[pad + oy:pad + oy + H, pad + ox:pad + ox + W]
    return acc / k


def _signs_chunk(seed: int, chunk: int, y: np.ndarray, photos: Sequence[np.ndarray] | None) -> np.ndarray:
    rng = np.random.default_rng([seed, chunk])
    tpls = _warp_templates()
    n, S = len(y), SIGN_SIZE * SIGN_SS
    out = np.empty((n, SIGN_SIZE, SIGN_SIZE, 3), np.float32)
    # where each template's square lands (drawn for the whole chunk): size, aspect, rotation, centre
    # offset, perspective jitter of the corners; then one batched solve for the PERSPECTIVE maps
    d = S * rng.uniform(0.8, 1.02, n)
    rot = np.radians(np.clip(rng.normal(0, 5, n), -12, 12))
    centre = S / 2 + rng.uniform(-0.06, 0.06, (n, 2)) * S
    sq = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])[None] * d[:, None, None]
    sq[..., 0] *= rng.uniform(0.85, 1.05, n)[:, None]  # signs seen from the side look narrower
    c, s_ = np.cos(rot)[:, None], np.sin(rot)[:, None]
    dst = np.stack([c * sq[..., 0] - s_ * sq[..., 1], s_ * sq[..., 0] + c * sq[..., 1]], -1)
    dst += centre[:, None, :] + rng.normal(0, 0.03, (n, 4, 2)) * d[:, None, None]
    coeffs = _perspective_coeffs_batch(dst, np.array([[0, 0], [WTPL, 0], [WTPL, WTPL], [0, WTPL]], float))
    motion = rng.random(n) < 0.35
    motion_len = rng.uniform(1, 4.5, n) * SIGN_SS
    motion_ang = rng.uniform(0, np.pi, n)
    blur = np.where(rng.random(n) < 0.7, rng.uniform(0, 0.8, n), 0.0)  # at the output resolution
    for i in range(n):
        im = _background(rng, S, photos)
        warped = tpls[int(y[i])].transform((S, S), Image.PERSPECTIVE, tuple(coeffs[i]), Image.BILINEAR)
        im.paste(warped, (0, 0), warped)  # alpha blend: bg * (1 - a) + sign * a
        if motion[i]:
            blurred = _motion_blur(np.asarray(im, np.float32), motion_len[i], motion_ang[i])
            im = Image.fromarray(np.clip(blurred, 0, 255).astype(np.uint8))
        if SIGN_SS > 1:
            im = im.reduce(SIGN_SS)
        if blur[i] > 0.05:
            im = im.filter(ImageFilter.GaussianBlur(float(blur[i])))
        out[i] = np.asarray(im, np.float32)
    # photometric jitter, vectorised over the chunk: saturation, contrast, brightness (often dark), tint, noise
    grey = _luma(out)[..., None]
    sat = rng.uniform(0.35, 1.15, n)[:, None, None, None]
    out = grey + (out - grey) * sat
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    con = rng.uniform(0.7, 1.5, n)[:, None, None, None]  # matched to real SynSigns' per-image std (median ~55)
    out = mean + (out - mean) * con
    gain = np.exp(rng.normal(-0.1, 0.45, n)).clip(0.12, 1.6)[:, None, None, None]  # its mean (median ~105)
    tint = rng.normal(1, 0.06, (n, 1, 1, 3))
    out = out * gain * tint
    out += rng.normal(0, 1, out.shape) * rng.uniform(0, 5, n)[:, None, None, None]
    # never a near-blank image: stretch the contrast of the flattest ones to a minimum spread
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    std = out.std(axis=(1, 2, 3), keepdims=True)
    out = mean + (out - mean) * np.maximum(1.0, MIN_STD / (std + 1e-6))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def generate_syn_signs(n: int, seed: int, photos: Sequence[np.ndarray] | None = None,
                       workers: int | None = None) -> Split:
    """``n`` SynSigns-style 3x40x40 images of the 43 GTSRB classes, balanced, deterministic for ``seed``.

    ``photos`` (HxWx3 uint8 arrays, e.g. BSDS500's) add photo-crop backgrounds to the synthetic ones.
    """
    y = _labels(n, NUM_SIGN_CLASSES, seed)
    x = _run_chunks(_signs_chunk, n, seed, y, (photos,), workers, "syn_signs_gen", (SIGN_SIZE, SIGN_SIZE, 3))
    return _to_split(x, y)


def _build_syn_signs(root: Path, split: str, with_photos: bool) -> Split:
    photos = None
    if with_photos:  # raises DatasetNotFoundError naming the accepted files when they are absent
        from dann.data.mnistm import bsds_photos

        photos = bsds_photos(root)
    where = f"{len(photos)} BSDS500 photos and synthetic backgrounds" if photos else "synthetic backgrounds"
    n = SYN_SIGNS_SIZES[split]
    print(f"[dann] generating syn_signs_gen/{split}: {n:,} images on {where} (seed {SYN_SIGNS_SEEDS[split]})")
    return generate_syn_signs(n, SYN_SIGNS_SEEDS[split], photos)


def build_syn_signs_gen(root: Path, split: str) -> Split:
    """Synthetic backgrounds only: the same images for every user, whatever their data root holds."""
    return _build_syn_signs(root, split, with_photos=False)


def build_syn_signs_gen_photo(root: Path, split: str) -> Split:
    """Half the backgrounds are BSDS500 photo crops (needs the photos, like mnist_m_regen)."""
    return _build_syn_signs(root, split, with_photos=True)


register(Domain("syn_numbers_gen", 10, build_syn_numbers_gen, needs_raw=False, shape=(3, 32, 32),
                doc="SynNumbers regenerated offline from matplotlib's fonts, 3x32x32, 100,000/10,000 "
                    "(the release has 479,400/9,553); not the release's images"))
register(Domain("syn_signs_gen", 43, build_syn_signs_gen, needs_raw=False, shape=(3, 40, 40),
                doc="SynSigns regenerated offline (procedural GTSRB pictograms), 3x40x40, 100,000/10,000; "
                    "not the release's images"))
register(Domain("syn_signs_gen_photo", 43, build_syn_signs_gen_photo, raw_files=bsds_present, shape=(3, 40, 40),
                doc="syn_signs_gen with half the backgrounds cut from BSDS500 photos (needs them)"))
